from relviz.cli import main

main()
