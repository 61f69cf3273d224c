"""The one state-changing step: open and hash the files, call `kexec_file_load(2)`, read back.

Owns the ctypes syscall wrapper and its flags, the errno explanations, the open-once-and-hash
of the kernel and initrd, the audit record, and the commit that compares the kernel's own
placement with the preview. May import `plan` and everything below it; never `cli` or `tui`.
"""
