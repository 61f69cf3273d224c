"""The next command line: what `plan` passes when the operator gives no --cmdline."""

from khotui.cmdline import diff_cmdline, next_cmdline, split_cmdline


def test_reuse_drops_boot_only_tokens_and_appends():
    current = "BOOT_IMAGE=/vmlinuz-7.3.4 root=/dev/sda1 ro initrd=\\initrd.img quiet kho=on\n"
    assert next_cmdline(current, "khostage=2") == "root=/dev/sda1 ro quiet kho=on khostage=2"


def test_quoted_values_stay_one_token():
    assert split_cmdline('a="b c" d') == ['a="b c"', "d"]
    assert next_cmdline('BOOT_IMAGE=x dyndbg="file x.c +p"') == 'dyndbg="file x.c +p"'


def test_diff_explains_each_change():
    d = diff_cmdline("BOOT_IMAGE=/v root=/dev/sda kho=on quiet",
                     "root=/dev/sda kho=off kho=on splash")
    assert d.boot_only_removed == ["BOOT_IMAGE=/v"]
    assert d.removed == ["quiet"]
    assert d.added == ["kho=off", "splash"]
    assert d.duplicates == ["kho"]
    assert d.kho == "on"          # the last kho= wins, as early_param parsing does
