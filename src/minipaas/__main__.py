from minipaas.cli.main import app

app()
