"""PackageManager: installing, removing and checking kit and plugin distributions in a
flow-managed environment, as one transaction (snapshot, install, probe, commit or roll back)."""
