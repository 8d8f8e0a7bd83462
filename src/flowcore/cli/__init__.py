"""The command line: the root click group and its global options, the core instance of one run
(``Flow``), the hand-over to a project's own flowcore, hints for unknown names, the update check."""
