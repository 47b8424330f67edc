"""The binding's layers import each other in one direction only (issue 12):
the codec knows nothing of sockets or connections; the descriptor layer knows
the codec; the transport knows both.  A cycle or a socket call in the codec
fails here."""

import ast
import os
import unittest

SRC = os.path.join(os.path.dirname(__file__), "..", "src", "chan")


def imports(module: str) -> set:
    tree = ast.parse(open(os.path.join(SRC, module + ".py")).read())
    out = set()
    for node in ast.walk(tree):  # function-level imports count too
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from ._x import ... / from . import _x
                out.update([node.module] if node.module else [a.name for a in node.names])
            else:
                out.add(node.module or "")
    return out


class LayerTests(unittest.TestCase):
    def test_codec_knows_no_sockets(self) -> None:
        got = imports("_codec")
        self.assertFalse(got & {"socket", "_socket", "select", "_conn", "_handles"}, got)

    def test_handles_below_transport(self) -> None:
        got = imports("_handles")
        self.assertIn("_codec", got)
        self.assertNotIn("_conn", got)

    def test_transport_uses_both(self) -> None:
        got = imports("_conn")
        self.assertTrue({"_codec", "_handles"} <= got, got)


if __name__ == "__main__":
    unittest.main()
