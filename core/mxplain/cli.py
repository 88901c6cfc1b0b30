"""The ``mxplain`` command line. User errors print one ``error: …`` line and exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mxplain.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mxplain")
def cli():
    """mxplain: explain image->property models of microstructure with domain attributes."""


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out", default="mxplain-run", show_default=True, type=click.Path(),
              help="Run folder.")
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N (default: [run] device).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@click.option("--overwrite", is_flag=True, help="Replace a finished run in --out.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Explain lots on the workers of this Dask scheduler (default: [run] scheduler).")
@click.option("--workers", default=None, type=int, metavar="N",
              help="Explain lots on a local Dask cluster of N processes (default: [run] workers).")
def run(config, out, device, resume, overwrite, quiet, scheduler, workers):
    """Run the pipeline of CONFIG (default: the packaged quickstart)."""
    from mxplain.pipeline import run as run_pipeline

    path = run_pipeline(config, out=out, device=device, resume=resume, overwrite=overwrite,
                        progress=not quiet, scheduler=scheduler, workers=workers)
    click.echo(f"run folder: {path}")
    report = path / "report" / "index.html"
    if report.exists():
        click.echo(f"report: {report}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def plugins(as_json):
    """List every registered component: name, kind, distribution, version."""
    from mxplain.plugins import list_components

    rows = list_components()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['kind']:<9}  {r['distribution']} {r['version']}")


@cli.group()
def data():
    """Make or import tile stores."""


@data.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(), help="Tile store path (.zarr).")
@click.option("--resume", is_flag=True, help="Continue an interrupted write.")
@click.option("--quiet", is_flag=True)
def synth(config, out, resume, quiet):
    """Write the tile store of CONFIG's [data] (default: the quickstart's)."""
    from mxplain import config as config_mod
    from mxplain import plugins as plugins_mod
    from mxplain.interfaces import RunContext

    cfg = config_mod.load(config)["data"]
    params = {k: v for k, v in cfg.items() if k != "name"}
    dataset = plugins_mod.get("dataset", cfg["name"])(**params)
    store = dataset.build(Path(out), RunContext(progress=not quiet), resume=resume)
    click.echo(f"tile store: {store.path} ({store.n_lots} lots, {store.n_tiles} tiles)")


@data.command()
@click.argument("folder", type=click.Path())
@click.option("--labels", required=True, type=click.Path(), help="CSV: lot, attributes, property.")
@click.option("--out", "out", required=True, type=click.Path(), help="Tile store path (.zarr).")
@click.option("--property-column", default="property", show_default=True)
@click.option("--units", default="", help="Units of the property (e.g. psi).")
def ingest(folder, labels, out, property_column, units):
    """Import FOLDER/<lot>/*.png|tif tiles with lot labels from a CSV."""
    from mxplain.ingest import ingest as do_ingest

    store = do_ingest(Path(folder), Path(labels), Path(out), property_column, units)
    click.echo(f"tile store: {store.path} ({store.n_lots} lots, {store.n_tiles} tiles)")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--compare", "compare", type=click.Path(), default=None,
              help="another finished run on the same lots: its forward sensitivities side by side")
def report(run_dir, compare):
    """Write RUN_DIR/report/index.html from a finished run."""
    from mxplain.report import write_report

    click.echo(f"report: {write_report(Path(run_dir), compare=compare)}")


def main(argv=None) -> int:
    try:
        cli.main(args=argv, prog_name="mxplain", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        click.echo("error: aborted", err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        return 2
    except OSError as exc:  # a full disk, a folder that cannot be written: the system's words + path
        where = f" ({exc.filename!r})" if getattr(exc, "filename", None) else ""
        click.echo(f"error: {exc.strerror or exc}{where}; the run folder is left resumable "
                   f"(--resume) once this is fixed", err=True)
        return 2
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
