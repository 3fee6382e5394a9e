"""``adaptermath push``: publish an adapter folder on the Hugging Face Hub with a model card."""

from __future__ import annotations

import os
from pathlib import Path

import click
from rich.table import Table

from adaptermath.cli.main import main
from adaptermath.errors import HubError

from ..common import console, err_console, json_option, print_json


@main.command("push")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--repo", "repo_id", required=True, metavar="OWNER/NAME", help="Model repository to push to (created when missing)."
)
@click.option("--private", is_flag=True, help="Create the repository as private; refuse to push to an existing public one.")
@click.option("--revision", metavar="BRANCH", help="Branch to commit to (created from main when missing).")
@click.option("--create-pr", is_flag=True, help="Open a pull request against main instead of committing to it.")
@click.option("--commit-message", "-m", metavar="TEXT", help="Commit title (default: 'adaptermath: <expression>').")
@click.option("--dry-run", is_flag=True, help="Show the files and the model card that would be pushed; upload nothing.")
@click.option("--include", "include", multiple=True, metavar="GLOB",
              help="Also upload files matching GLOB (e.g. '*.txt', 'extras/**'); by default only the adapter's own "
                   "files (adapter_config.json, weights, adaptermath.json, README.md) go up. Repeat.")
@click.option(
    "--token-env",
    metavar="VAR",
    help="Read the token from environment variable VAR (default: HF_TOKEN, then the token `hf auth login` saved).",
)
@json_option
def push_command(
    folder: Path,
    repo_id: str,
    private: bool,
    revision: str | None,
    create_pr: bool,
    commit_message: str | None,
    dry_run: bool,
    include: tuple[str, ...],
    token_env: str | None,
    as_json: bool,
) -> None:
    """Push the adapter in FOLDER to the Hub repository OWNER/NAME.

    When FOLDER holds an adaptermath.json provenance record, a model card (README.md) is written
    first: base model, tags, the expression and its normal form, every input with its revision
    and sha256, evaluation results, and a PEFT loading snippet. A README.md you wrote yourself is
    kept. The token is never printed; HF_ENDPOINT and HF_HUB_OFFLINE are honoured.

    \b
    Examples:
      adaptermath push ./merged --repo me/sst2-mnli-merge --dry-run
      adaptermath push ./merged --repo me/sst2-mnli-merge --private
      adaptermath push ./merged --repo me/sst2-mnli-merge --revision lambda-0.3
      adaptermath push ./merged --repo org/shared-adapter --create-pr -m "Add λ=0.3 merge"
      HF_WRITE=... adaptermath push ./merged --repo me/x --token-env HF_WRITE --json
    """
    from adaptermath.hub import push_folder

    token = None
    if token_env is not None:
        token = os.environ.get(token_env)
        if not token:
            raise HubError(f"environment variable {token_env} is not set or empty (--token-env)")
    if not as_json and not dry_run:
        err_console.print(f"pushing {folder} to {repo_id} …", highlight=False)
    result = push_folder(
        folder,
        repo_id,
        private=private,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message,
        dry_run=dry_run,
        token=token,
        include=include,
    )
    if as_json:
        print_json(result.to_dict())
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("[bold]repository[/]", result.repo_id + (" (private)" if result.private else ""))
    table.add_row("[bold]branch[/]", result.revision or "main")
    table.add_row("[bold]commit message[/]", result.commit_message)
    table.add_row("[bold]files[/]", ", ".join(result.files))
    if result.card is None:
        table.add_row("[bold]model card[/]", "kept as it is (README.md not written by adaptermath, or no adaptermath.json)")
    if result.dry_run:
        table.add_row("[bold]dry run[/]", "nothing was written or uploaded")
    console.print(table, highlight=False)
    # URLs on their own lines, never wrapped, so they can be copied.
    if result.commit_url:
        console.print(f"[bold]commit[/]        {result.commit_url}", highlight=False, soft_wrap=True)
    if result.pr_url:
        console.print(f"[bold]pull request[/]  {result.pr_url}", highlight=False, soft_wrap=True)
    if result.dry_run and result.card is not None:
        console.rule("README.md (model card)")
        console.print(result.card, markup=False, highlight=False)
