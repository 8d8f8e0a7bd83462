"""Where finished builds' artifacts are kept and served from."""
