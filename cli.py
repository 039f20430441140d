"""featpipe command line: a thin click layer over featpipe/ and heads/."""
import click


@click.group()
def main() -> None:
    """featpipe: aligned audio-visual embedding caches for music videos."""
