"""The ``mxplain`` command line. User errors print one ``error: …`` line and exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from mxplain.errors import UserError


def echo(message: str, err: bool = False) -> None:
    """``click.echo`` of text that may hold paths which are not valid UTF-8 (a folder name's stray
    byte): shown with a replacement character instead of failing."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        try:
            message = message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        except UnicodeEncodeError:
            message = message.encode("utf-8", "replace").decode("utf-8")
    click.echo(message, err=err)


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

    # the pipeline checks the whole config, its paths, checkpoints and sizes (mxplain.preflight)
    # before anything is written
    try:
        path = run_pipeline(config, out=out, device=device, resume=resume, overwrite=overwrite,
                            progress=not quiet, scheduler=scheduler, workers=workers)
    except OSError as exc:  # a full disk: the system's words, the path, and whether to resume
        hint = ("; the run folder is left resumable (--resume) once this is fixed"
                if (Path(out) / "config.toml").is_file() else "")
        raise UserError(os_error_text(exc, Path(out), "run folder") + hint) from None
    echo(f"run folder: {path}")
    report = path / "report" / "index.html"
    if report.exists():
        echo(f"report: {report}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
def plugins(as_json):
    """List every registered component: name, kind, distribution, version."""
    from mxplain.plugins import list_components

    rows = list_components()
    if as_json:
        echo(json.dumps(rows, indent=1))
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        echo(f"{r['name']:<{width}}  {r['kind']:<9}  {r['distribution']} {r['version']}")


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
    from mxplain import preflight
    from mxplain.interfaces import RunContext
    from mxplain.outputs import check_path_text

    out = check_path_text(out, "--out")
    full = config_mod.load(config)
    preflight.check_sizes({"data": full["data"], "run": full["run"], "explain": {}}, Path(out),
                          "cpu", check_disk=not resume, where=config or "quickstart")
    cfg = full["data"]
    params = {k: v for k, v in cfg.items() if k != "name"}
    dataset = plugins_mod.get("dataset", cfg["name"])(**params)
    try:
        store = dataset.build(out, RunContext(progress=not quiet), resume=resume)
    except OSError as exc:
        raise UserError(os_error_text(exc, Path(out), "tile store")) from None
    echo(f"tile store: {store.path} ({store.n_lots} lots, {store.n_tiles} tiles)")


@data.command()
@click.argument("folder", type=click.Path())
@click.option("--labels", required=True, type=click.Path(), help="CSV: lot, attributes, property.")
@click.option("--out", "out", required=True, type=click.Path(), help="Tile store path (.zarr).")
@click.option("--property-column", default="property", show_default=True)
@click.option("--units", default="", help="Units of the property (e.g. psi).")
@click.option("--attributes", default=None, metavar="A,B,C",
              help="The attribute columns of the CSV (default: every column but lot and the "
                   "property); the others are ignored and listed.")
def ingest(folder, labels, out, property_column, units, attributes):
    """Import FOLDER/<lot>/*.png|tif tiles with lot labels from a CSV."""
    from mxplain.ingest import ingest as do_ingest

    chosen = None if attributes is None else attributes.split(",")
    try:
        store = do_ingest(Path(folder), Path(labels), out, property_column, units,
                          attributes=chosen)
    except OSError as exc:
        raise UserError(os_error_text(exc, Path(out), "tile store")) from None
    echo(f"tile store: {store.path} ({store.n_lots} lots, {store.n_tiles} tiles)")
    from mxplain.ingest import summary

    for line in summary(store):  # the columns used and ignored, the grey-level rule
        echo(line)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--compare", "compare", type=click.Path(), default=None,
              help="another finished run on the same lots: its forward sensitivities side by "
                   "side, on its own page RUN_DIR/report/compare-<OTHER_RUN name>.html")
def report(run_dir, compare):
    """Write RUN_DIR/report/index.html from a finished run (with --compare: its own page)."""
    from mxplain.report import write_report

    try:
        echo(f"report: {write_report(Path(run_dir), compare=compare)}")
    except OSError as exc:
        raise UserError(os_error_text(exc, Path(run_dir) / "report", "report")) from None


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("files", nargs=-1, type=click.Path())
@click.option("--pairs", "n_pairs", default=80, show_default=True, type=int,
              help="Pairs on the page (stratified over lots and attributes).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the pairs' draw.")
@click.option("--delta", default=0.35, show_default=True, type=float,
              help="How far the edit moves the attribute.")
@click.option("--out", "out", default=None, type=click.Path(),
              help="The page (default RUN_DIR/review/index.html); with --simulate the answers file.")
@click.option("--import", "do_import", is_flag=True,
              help="Import FILES (answers downloaded from the page) into metrics.json and the report.")
@click.option("--simulate", is_flag=True,
              help="Answer the page by the dataset's attribute measurement (synthetic lots).")
@click.option("--error-rate", default=0.0, show_default=True, type=float,
              help="--simulate: share of decided answers given to the wrong side.")
@click.option("--reviewer", default="simulated", show_default=True,
              help="--simulate: the reviewer's name in the answers.")
@click.option("--device", default="cpu", show_default=True, help="Device the editor runs on.")
def review(run_dir, files, n_pairs, seed, delta, out, do_import, simulate, error_rate, reviewer,
           device):
    """Expert review of RUN_DIR's edits: write the page, import answers, or simulate a reviewer.

    \b
    mxplain review RUN                         the page (RUN/review/index.html)
    mxplain review RUN --import a.json b.json  answers into metrics.json and the report
    mxplain review RUN --simulate --error-rate 0.1    simulated answers (synthetic lots)
    """
    from mxplain import review as review_mod
    from mxplain.review_answers import import_answers
    from mxplain.review_simulate import simulate as simulate_answers

    if do_import and simulate:
        raise UserError("give --import or --simulate, not both")
    if files and not do_import:
        raise UserError(f"unexpected argument {files[0]!r} (answers files go after --import)")
    try:
        if do_import:
            res = import_answers(Path(run_dir), list(files))
            pooled = res["pooled"]
            share = "?" if pooled["agreement"] is None else f"{pooled['agreement']:.2f}"
            echo(f"review: {pooled['answers']} answers of {len(res['reviewers'])} reviewer(s), "
                 f"agreement {share} ({pooled['verdict']}); metrics.json and the report updated")
        elif simulate:
            path = simulate_answers(Path(run_dir), n_pairs, seed, delta, error_rate, reviewer,
                                    out, device)
            echo(f"answers: {path}")
        else:
            path = review_mod.write_page(Path(run_dir), n_pairs, seed, out, delta, device)
            echo(f"review page: {path}")
    except OSError as exc:
        raise UserError(os_error_text(exc, Path(run_dir) / "review", "review")) from None


def os_error_text(exc: OSError, fallback: Path | None = None, what: str = "output") -> str:
    """An OSError in one line: the system's words and the path (the error's own, else the output
    ``fallback`` it happened under)."""
    words = exc.strerror or str(exc) or type(exc).__name__
    if getattr(exc, "filename", None):
        return f"{words}: {str(exc.filename)!r}"
    if fallback is not None:
        return f"{words} (writing the {what} {str(fallback)!r})"
    return words


def main(argv=None) -> int:
    try:
        cli.main(args=argv, prog_name="mxplain", standalone_mode=False)
    except UserError as exc:
        echo(f"error: {exc}", err=True)
        return 2
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        echo("error: aborted", err=True)
        return 2
    except click.ClickException as exc:
        echo(f"error: {exc.format_message()}", err=True)
        return 2
    except OSError as exc:  # a folder that cannot be read or written: the system's words + path
        echo(f"error: {os_error_text(exc)}", err=True)
        return 2
    return 0


def console() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console()
