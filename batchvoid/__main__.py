from batchvoid.cli import main

main()
