from mxplain.cli import console

console()
