"""The text form (SPEC.md §12): rules, examples, and agreement with chancodec (tools/)."""

from __future__ import annotations

import math
import os
import random
import subprocess
import unittest

import helpers
from helpers import FdTestCase, same

import chan
import chan.text as text


class TextFormTests(FdTestCase):
    def test_spec_examples(self) -> None:
        floats = {1.0: "1.0", 0.5: "0.5", 100.0: "100.0", -0.0: "-0.0", 1e21: "1e+21", 1e-7: "1e-7",
                  1.5e-7: "1.5e-7", 0.000001: "0.000001", 1.2345678901234568e20: "123456789012345680000.0",
                  2.0 ** 53: "9007199254740992.0", 5e-324: "5e-324", 1.7976931348623157e308: "1.7976931348623157e+308"}
        for f, want in floats.items():
            self.assertEqual(text.dumps(f), want)
            self.assertTrue(same(text.loads(want), f))
        self.assertEqual(text.dumps({"op": "get", "reply_to": chan.Handle(2, 0)}), '{"op":"get","reply_to":{"$conn":0}}')
        self.assertEqual(text.dumps([300, -1.5, [True]]), "[300,-1.5,[true]]")
        self.assertEqual(text.dumps(2**53 - 1), "9007199254740991")
        self.assertEqual(text.dumps(2**53), '{"$int":"9007199254740992"}')
        self.assertEqual(text.dumps(-2**63), '{"$int":"-9223372036854775808"}')
        self.assertEqual(text.dumps([math.nan, math.inf, -math.inf]),
                         '[{"$float":"NaN"},{"$float":"Infinity"},{"$float":"-Infinity"}]')
        self.assertEqual(text.dumps(b"\x00\xff"), '{"$bytes":"AP8="}')
        self.assertEqual(text.dumps({"$": 1, "$$": 2, "$x": 3}), '{"$$":1,"$$$":2,"$$x":3}')
        self.assertEqual(text.dumps("\"\\/\x7f\x00\x08\x0c\n\r\t\x1fé"), '"\\"\\\\/\x7f\\u0000\\b\\f\\n\\r\\t\\u001fé"')
        self.assertEqual(text.dumps({"a": [], "b": {}}, pretty=True), '{\n  "a": [],\n  "b": {}\n}')

    def test_input_rules(self) -> None:
        ok = {"-0": 0, "123456789012345678": 123456789012345678, '{"$int":"-9223372036854775808"}': -2**63,
              '{"$$a":1}': {"$a": 1}, ' [ 1 , 2 ] ': [1, 2], '"\\u0000"': "\x00", '{"$bytes":""}': b""}
        for src, want in ok.items():
            self.assertEqual(text.loads(src), want, src)
        bad = {
            "NaN": "INVALID_JSON", "[1,]": "INVALID_JSON", "1 2": "INVALID_JSON", "{'a':1}": "INVALID_JSON",
            "01": "INVALID_JSON", "": "INVALID_JSON",
            "9223372036854775808": "INVALID_TEXT", "1e400": "INVALID_TEXT",
            '{"$int":"-0"}': "INVALID_TEXT", '{"$int":"01"}': "INVALID_TEXT", '{"$int":5}': "INVALID_TEXT",
            '{"$float":"nan"}': "INVALID_TEXT", '{"$bytes":"aGl="}': "INVALID_TEXT",
            '{"$bytes":"aGk"}': "INVALID_TEXT", '{"$fd":-1}': "INVALID_TEXT", '{"$fd":1.0}': "INVALID_TEXT",
            '{"$x":1}': "INVALID_TEXT", '{"$int":"1","a":2}': "INVALID_TEXT",
            '{"a":1,"a":2}': "DUPLICATE_KEY", '"\\ud800"': "INVALID_UTF8", '{"a\\u0000":1}': "INVALID_KEY",
            '[{"$fd":1}]': "HANDLE_INDEX_OUT_OF_RANGE", '[{"$fd":1},{"$fd":0}]': "HANDLE_INDEX_OUT_OF_ORDER",
            "[" * 33 + "]" * 33: "DEPTH_EXCEEDED", "[" * 5000 + "]" * 5000: "DEPTH_EXCEEDED",
            "[" + ",".join('{"$fd":%d}' % i for i in range(254)) + "]": "HANDLE_LIMIT_EXCEEDED",
        }
        # INVALID_JSON wins over every other fault, however deep, duplicated or
        # badly encoded the rest is; then the first fault in document order
        # (SPEC.md §12.4 rule 4).
        bad.update({
            '[{"a":1,"a":2},]': "INVALID_JSON", '["\\ud800",]': "INVALID_JSON", "[1e400,]": "INVALID_JSON",
            "[" * 5000: "INVALID_JSON", "[" * 5000 + "]" * 4999 + "}": "INVALID_JSON",
            '{"a":1,"a":2': "INVALID_JSON",
            '[{"$int":"x"},{"a":1,"a":2}]': "INVALID_TEXT", '[{"a":1,"a":2},{"$int":"x"}]': "DUPLICATE_KEY",
            '{"a":{"$x":1},"a":2}': "INVALID_TEXT",
        })
        for src_b, name in ((b'["\xff",]', "INVALID_JSON"), (b'[{"$int":"x"},"\xff"]', "INVALID_TEXT"),
                            (b'["\xff",{"$int":"x"}]', "INVALID_UTF8")):
            with self.subTest(src_b):
                with self.assertRaises(chan.ChanError) as cm:
                    text.loads(src_b)
                self.assertEqual(cm.exception.name, name)
        for src, name in bad.items():
            with self.subTest(src):
                with self.assertRaises(chan.ChanError) as cm:
                    text.loads(src)
                self.assertEqual(cm.exception.name, name)
        with self.assertRaises(chan.InvalidUtf8):
            text.loads(b'"\xff"')
        with self.assertRaises(chan.UnreferencedHandle):
            text.loads('[{"$fd":0}]', handle_count=2)
        self.assertEqual(text.loads("[" * 32 + "]" * 32), eval("[" * 32 + "]" * 32))
        self.assertEqual(len(text.loads("[" + ",".join('{"$fd":%d}' % i for i in range(253)) + "]")), 253)
        # streams (§12.4 rule 6)
        self.assertEqual(list(text.iter_loads('1 2\n[3]{"a":null}"x"\ttrue ')), [1, 2, [3], {"a": None}, "x", True])
        for bad_stream in ('1"a"', "[1] 2x", "nul"):
            with self.assertRaises(chan.InvalidJson):
                list(text.iter_loads(bad_stream))

    def chancodec(self, *args: str, data: bytes) -> bytes:
        tool = os.path.join(helpers.BUILD_DIR, "chancodec")
        if not os.access(tool, os.X_OK):
            raise AssertionError(f"{tool} is not built (make builds it)")
        r = subprocess.run([tool, *args], input=data, capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        return r.stdout

    def test_agrees_with_chancodec(self) -> None:
        rng = random.Random(12)
        values = [helpers.random_value(rng, handles=True) for _ in range(400)]
        frames = b"".join(chan.encode(v)[0] for v in values)
        # frames -> text: chancodec renders exactly what this binding renders
        lines = self.chancodec("decode", data=frames).decode("utf-8").split("\n")
        self.assertEqual(lines[-1], "")
        mine = [text.dumps(chan.decode(chan.encode(v)[0], detached=True)) for v in values]
        self.assertEqual(lines[:-1], mine)
        # text -> frames: chancodec encodes this binding's text to this binding's bytes
        again = self.chancodec("encode", data="".join(m + "\n" for m in mine).encode("utf-8"))
        self.assertEqual(again, frames)
        # pretty mode too
        pretty = self.chancodec("decode", "--pretty", data=frames[: len(chan.encode(values[0])[0])])
        self.assertEqual(pretty.decode("utf-8"), text.dumps(chan.decode(chan.encode(values[0])[0], detached=True),
                                                            pretty=True) + "\n")


if __name__ == "__main__":
    unittest.main()
