from mnist20k.cli import app

app(prog_name="mnist20k")
