"""The build dashboard: its pages and JSON routes, the task index it lists from, and the live
log it streams to a page (server-sent events fed by the bus)."""
