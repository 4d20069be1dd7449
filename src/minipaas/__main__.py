from minipaas.cli.main import main

main()
