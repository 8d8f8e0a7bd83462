"""The cloud-build tests' fixtures, as pytest plugins: test modules name them as arguments and
never import them (helpers such as ``ServerProc`` or ``make_site`` they import as usual).

* cloudbuild_server_support: ``server`` (module), ``git_daemon`` (module), ``client``;
* cloudbuild_publish_support: ``flow`` (the kit installed into a flow environment, module),
  ``publish_server`` (the build server from that environment: a publish test module names it
  ``server`` with a one-line fixture of its own), ``git_host`` (module);
* cloudbuild_redis_support: ``redis_server``;
* tiers (tests/tiers.py): the tier markers and the xdist grouping, as for tests/.
"""

import repo_tests  # noqa: F401  (puts tests/ and the kit's src/ on sys.path, for a run of this folder alone)

pytest_plugins = ["tiers", "cloudbuild_server_support", "cloudbuild_publish_support", "cloudbuild_redis_support"]
