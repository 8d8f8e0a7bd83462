"""PluginSystem: the pluggy manager, the hook specifications, the contexts handed to kits and
plugins, and loading them in isolation (a broken plugin is reported and skipped)."""
