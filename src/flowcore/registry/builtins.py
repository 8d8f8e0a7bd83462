"""Built-in commands. They can never be overridden by a kit or plugin.

Each entry maps a command name to ``"module:attribute"`` and its one-line help, so that
``flow --help`` lists built-ins without importing their modules. The table is the registry's (it
decides precedence); the commands themselves live in flowcore.commands, above it, and are
imported by name only when run.
"""

from __future__ import annotations

BUILTIN_COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("flowcore.commands.config_cmd:config", "Show and change flow's configuration."),
    "buildkit": ("flowcore.commands.buildkit_cmd:buildkit", "Install, remove, list and switch build kits."),
    "plugin": ("flowcore.commands.plugin_cmd:plugin", "Install, remove and list plugins."),
    "completion": ("flowcore.commands.completion_cmd:completion",
                   "Print the shell completion script (bash, zsh, fish)."),
    "doctor": ("flowcore.commands.doctor_cmd:doctor",
               "Check installed kits and plugins against the config; --fix rebuilds."),
    "create": ("flowcore.commands.create_cmd:create", "Create a new project from a build kit's template."),
    "init": ("flowcore.commands.init_cmd:init", "Make an existing project a flow project: record its build kit."),
    "trust": ("flowcore.commands.trust_cmd:trust",
              "Trust this project: use its .flow/env, plugins and package source."),
    "update": ("flowcore.commands.update_cmd:update", "Update this project to a newer version of its copier template."),
}
