from flow_kit_cloudbuild.server.cli import main

main()
