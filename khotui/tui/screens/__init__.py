"""One screen per task: overview, memory map, handover, prepare, plan; modals for confirm/help."""
