"""CommandRegistry: the click command tree of one run (built-ins, kit and plugin commands from the
command manifest), precedence and duplicates, and the manifest that lets help skip plugins."""
