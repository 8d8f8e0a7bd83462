from flowcore.cli import main

main()
