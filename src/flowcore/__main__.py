from flowcore.cli.main import main

main()
