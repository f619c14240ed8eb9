from .launcher import cli_main

cli_main()
