"""The README's example runs as written (with the node's port put in)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unittest

import support


@support.skip_unless_library_has("confd_notifications_connect", "confd_read_notification")
class ReadmeExampleTest(unittest.TestCase):
    def test_example_runs(self):
        support.require_prerequisites()
        with open(os.path.join(support.PYTHON_DIR, "README.md"), encoding="utf-8") as f:
            blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
        self.assertTrue(blocks, "README.md has no python example")
        c = support.Cluster(self.addCleanup, "readme")
        n = c.add("readme", "127.0.0.1", support.free_port(), unix=False)
        c.wait_ready()
        code = blocks[0].replace("4565", str(n.ipc_port))
        env = dict(os.environ, PYTHONPATH=support.PYTHON_DIR)
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, "stdout:\n%s\nstderr:\n%s" % (r.stdout, r.stderr))
        self.assertIn("(3, [])", r.stdout)
        self.assertIn("64 {'type': 5}", r.stdout)
        self.assertIn("17 operation in wrong state | berelay: node is not a secondary", r.stdout)


if __name__ == "__main__":
    unittest.main()
