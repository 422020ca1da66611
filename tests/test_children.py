"""A pool's processes end without tearing their modules down (children._exit_now): what they printed and what
their threads were writing must still be there."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent('''
    import sys, threading, time
    from pathlib import Path
    from medablate.core.children import process_pool

    def late_writer(path):
        time.sleep(0.5)
        Path(path).write_text("written")

    def task(path):
        print("printed by the child", end="")  # no newline: still in the buffer of a pipe when the task returns
        threading.Thread(target=late_writer, args=(path,)).start()  # not a daemon: joined before the exit
        return "done"

    if __name__ == "__main__":
        with process_pool(1) as pool:
            print(pool.submit(task, sys.argv[1]).result(), flush=True)
''')


def test_a_pool_process_flushes_its_output_and_joins_its_threads_before_it_ends(tmp_path: Path) -> None:
    script, written = tmp_path / "pool.py", tmp_path / "written.txt"
    script.write_text(SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(written)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "done" in done.stdout and "printed by the child" in done.stdout
    assert written.read_text() == "written"
