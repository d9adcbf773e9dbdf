from mnist20k.cli import main

main()
