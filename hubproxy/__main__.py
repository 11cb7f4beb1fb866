from hubproxy.cli import main

main()
