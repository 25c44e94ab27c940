"""README.md runs as printed, in order, in an empty folder.

A Python block whose first line is ``# name.py`` is a file (a later block
naming the same file continues it); a ``python -m miniq ... worker`` command
runs as a real background worker in that folder; the other Python blocks run
in order in one interpreter there, and a value a comment promises (``# 9``,
``# 13 (by name)``, ``# [0, 2, ..., 18]``) is checked."""
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

from tests.conftest import ROOT, WorkerProcess, wait_for

BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
FILE = re.compile(r"# ([\w/]+\.py)\b")

SKIP = {  # the first line of each block that cannot run in an empty folder: why
    "python examples/demo.py": "the demo (the last test here runs it) and the suite itself",
    "# myproj/tasks.py": "imports the vendored copy the next block makes",
    "mkdir -p myproj/_vendor": "copies miniq from a clone (tests/test_vendoring.py does this)",
    "python benchmarks/bench.py": "the benchmark: minutes of load, from a clone",
    "python -m miniq -A proj dashboard": "a server that runs until stopped (test_dashboard)",
}


def readme_blocks():
    """[(language, text)] of README.md's fenced blocks, in order."""
    with open(os.path.join(ROOT, "README.md")) as f:
        return BLOCK.findall(f.read())


def sort_blocks(blocks):
    """Split the blocks into files {name: text}, worker commands and session snippets."""
    files, commands, session, skipped = {}, [], [], []
    for language, text in blocks:
        first = text.splitlines()[0]
        named = FILE.match(first)
        if any(first.startswith(key) for key in SKIP):
            skipped.append(first)
        elif language == "python" and named:
            files[named.group(1)] = files.get(named.group(1), "") + text
        elif language == "python":
            session.append(text)
        else:
            assert language == "bash", f"a {language!r} block the test cannot run: {first}"
            lines = (shlex.split(line, comments=True) for line in text.splitlines())
            commands += [argv for argv in lines if argv]
    for argv in commands:
        assert argv[:3] == ["python", "-m", "miniq"] and "worker" in argv, (
            f"a command the test cannot run (run it here, or add it to SKIP): {argv}")
    assert len(skipped) == len(SKIP), f"SKIP names a block the README no longer has: {skipped}"
    return files, [argv[3:] for argv in commands], session


def run_snippets():
    """In the subprocess: run the JSON list of snippets on stdin in one namespace,
    check each expression a comment promises a literal value for, print those values."""
    import ast
    import io
    import json
    import sys
    import tokenize

    def promised(comment):
        for text in (comment, comment.split(" (")[0]):
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                pass
        return run_snippets  # no promise

    def keeps(value, promise):
        if isinstance(promise, list) and ... in promise:  # [0, 2, ..., 18]: head and tail
            cut = promise.index(...)
            head, tail = promise[:cut], promise[cut + 1:]
            return value[:len(head)] == head and value[len(value) - len(tail):] == tail
        return value == promise

    namespace, checked = {"__name__": "__main__"}, []
    for number, source in enumerate(json.load(sys.stdin)):
        where = f"<README snippet {number + 1}>"
        tokens = tokenize.generate_tokens(io.StringIO(source).readline)
        comments = {t.start[0]: t.string[1:].strip() for t in tokens if t.type == tokenize.COMMENT}
        for node in ast.parse(source).body:
            if not isinstance(node, ast.Expr):
                exec(compile(ast.Module([node], []), where, "exec"), namespace)
                continue
            value = eval(compile(ast.Expression(node.value), where, "eval"), namespace)
            promise = promised(comments.get(node.end_lineno, ""))
            if promise is not run_snippets:
                assert keeps(value, promise), f"{where}:{node.lineno}: {value!r}, not {promise!r}"
                checked.append(repr(promise))
    print(json.dumps(checked))


def test_readme_runs_as_printed(tmp_path):
    files, commands, session = sort_blocks(readme_blocks())
    folder = tmp_path / "empty"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "MINIQ_BROKER_URL"}
    env.update(PYTHONPATH=ROOT, PYTHONFAULTHANDLER="1")  # this checkout's miniq
    workers = []
    try:
        for number, args in enumerate(commands):
            workers.append(WorkerProcess(args, env, tmp_path / f"worker-{number}.log", cwd=folder))
            worker = workers[-1]  # its banner, printed at any log level, says it is serving
            wait_for(lambda: "[tasks]" in worker.output() or worker.proc.poll() is not None,
                     message="the README's worker to start")
            assert worker.proc.poll() is None, worker.output()
        code = inspect.getsource(run_snippets) + "\nrun_snippets()\n"
        run = subprocess.run([sys.executable, "-c", code], cwd=folder, env=env, text=True,
                             input=json.dumps(session), capture_output=True, timeout=120)
        assert run.returncode == 0, run.stderr + "".join(w.output() for w in workers)
    finally:
        for worker in workers:
            worker.kill_group()
    checked = json.loads(run.stdout)
    assert commands and "9" in checked, checked  # at least the Quickstart's promise was checked


def test_the_demo_the_readme_starts_with_runs(tmp_path):
    """``python examples/demo.py``, in a copy of the folder: a worker, each task, a kill."""
    shutil.copytree(os.path.join(ROOT, "examples"), tmp_path / "examples",
                    ignore=shutil.ignore_patterns("*.db*", "__pycache__"))
    os.symlink(os.path.join(ROOT, "miniq"), tmp_path / "miniq")
    done = subprocess.run([sys.executable, str(tmp_path / "examples" / "demo.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    for line in ("get() = 9", "crunch.delay(1000).get() = 1000", "cleaned up after the soft",
                 "stubborn.delay(10) -> ", "add.delay(1, 2) after the kill = 3"):
        assert line in done.stdout, done.stdout
