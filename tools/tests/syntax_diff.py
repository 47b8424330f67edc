#!/usr/bin/env python3
"""Differential checks of chancodec's text reader (SPEC.md §12.4 rule 4).

1. Syntax: documents that start with a duplicate key, mutated at random;
   chancodec must call a document INVALID_JSON exactly when Python's json
   module (the oracle: it accepts duplicates, lone surrogates and
   out-of-range numbers, so only syntax decides) rejects it.
2. Order: documents holding several faults (a bad marker, a '$' key, a
   repeated key, a string or key that is not Unicode, U+0000 in a key, a
   number out of range, nesting too deep, bad handle indices), some early,
   some late, several in one key; chancodec's answer (the error name, or the
   canonical text of the value) must equal the Python binding's reader
   (python/src/chan/text.py), which follows the spec's order: INVALID_JSON,
   then the first fault in document order, then the handle rules.

   syntax_diff.py CHANCODEC N [SEED]     (N documents for each part)

The generator stays away from three places where the Python reader departs
from SPEC.md and chancodec follows the spec: ints of more than 4,300 digits
(Python's int() limit makes them INVALID_JSON; §12.4 says INVALID_TEXT),
"$fd"/"$conn" indices outside int64 (Python takes any int and reports
HANDLE_INDEX_OUT_OF_RANGE after the walk; §12.1 rules 2 and 5 reject the
number: INVALID_TEXT), nesting deeper than Python's recursion limit (its
fallback says DEPTH_EXCEEDED without walking what comes before the deep part),
and a key that is not Unicode whose value holds a fault (text.py checks the
key's UTF-8 after walking the value: `out[_check_str(k)] = _resolve(x)`
evaluates the right side first; in document order the key comes first:
INVALID_UTF8).  run.sh has golden cases for all four.
"""
import concurrent.futures, json, os, random, subprocess, sys

C = sys.argv[1]
n = int(sys.argv[2])
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 1
rnd = random.Random(seed)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'python', 'src'))
from chan import text as pytext  # noqa: E402


def run_c(doc):
    """chancodec's answer for one document (bytes): an error name, or 'OK '
    and the canonical text of the value."""
    r = subprocess.run([C, 'encode'], input=doc + b'\n', capture_output=True)
    if r.returncode != 0:
        first = r.stderr.decode('utf-8', 'replace').split('\n')[0]
        parts = first.split(': ')
        return parts[2] if len(parts) > 2 else 'RC%d %s' % (r.returncode, first)
    d = subprocess.run([C, 'decode', '--revision', '1.1'], input=r.stdout, capture_output=True)
    return 'OK ' + d.stdout.decode('utf-8', 'replace').rstrip('\n')


def run_py(doc):
    try:
        return 'OK ' + pytext.dumps(pytext.loads(doc))
    except Exception as e:  # a chan error has .name
        return getattr(e, 'name', type(e).__name__)


pool = concurrent.futures.ThreadPoolExecutor(max_workers=(os.cpu_count() or 2) * 2)
status = 0

# ---- 1. syntax --------------------------------------------------------------
atoms = ['1', '-0.5e3', '0', '"s"', '"\\u00e9"', '"\\n"', 'true', 'false', 'null', '[]', '{}', '{"k":[1,2]}', '[{"x":null}]', '"\\ud800"', '1e400']
def doc():
    parts = [rnd.choice(atoms) for _ in range(rnd.randint(1, 4))]
    return '[{"a":1,"a":2},' + ','.join(parts) + ']'
alphabet = list('[]{},:"\\01-.eEtrunlfas ') + ['\x01', '\u00e9']
def mutate(s):
    s = list(s)
    for _ in range(rnd.randint(0, 2)):
        op = rnd.random(); i = rnd.randrange(len(s) + 1)
        if op < 0.4 and s: del s[min(i, len(s) - 1)]
        elif op < 0.8: s.insert(i, rnd.choice(alphabet))
        elif s: s[min(i, len(s) - 1)] = rnd.choice(alphabet)
    return ''.join(s)
def py_syntax_ok(s):
    def bad(x): raise ValueError(x)
    try:
        t = s.lstrip(' \t\n\r')
        v, end = json.JSONDecoder(parse_constant=bad).raw_decode(t)
        # the first document of a stream: a scalar must be followed by whitespace or the end
        return t[0] in '[{"' or end == len(t) or t[end] in ' \t\n\r'
    except ValueError: return False
def one_document(d):
    if '\n' in d: return False
    try:  # one document only: a valid first document followed by more is a stream case
        t = d.strip(' \t\r')
        _v, end = json.JSONDecoder().raw_decode(t)
        if end != len(t): return False
    except ValueError:
        pass
    return True
docs = [d for d in (mutate(doc()) for _ in range(n)) if one_document(d)]
mism = 0
for d, got in zip(docs, pool.map(lambda d: run_c(d.encode()), docs)):
    if (got == 'INVALID_JSON') == py_syntax_ok(d):
        mism += 1
        if mism <= 5: print('MISMATCH', repr(d), got)
print('syntax differential: %d documents, %d mismatches' % (len(docs), mism))
status |= mism > 0

# ---- 2. order -----------------------------------------------------------------
# Faults a walk meets at one place.  Each is bytes (raw invalid UTF-8 is
# written as such), and is a value.
MARKER_FAULTS = [
    b'{"$int":"x"}', b'{"$int":1}', b'{"$int":"01"}', b'{"$int":"-0"}', b'{"$int":"9223372036854775808"}',
    b'{"$int":"12\\u00003"}', b'{"$int":"\\ud800"}', b'{"$int":"\xff"}', b'{"$int":{"a":1,"a":2}}',
    b'{"$int":["\\ud800",1e400]}', b'{"$float":"nan"}', b'{"$float":"NaN\\u0000x"}', b'{"$float":1e400}',
    b'{"$bytes":"AB=="}', b'{"$bytes":"AA"}', b'{"$bytes":"\xff\xfe=="}', b'{"$bytes":null}',
    b'{"$fd":-1}', b'{"$fd":0.0}', b'{"$fd":0e0}', b'{"$fd":1e400}', b'{"$conn":"0"}', b'{"$conn":true}',
    b'{"$fd":{"\\u0000":1}}', b'{"$x":1}', b'{"$":1}', b'{"$int":"1","a":2}', b'{"$int":"1","$int":"1"}',
    b'{"$fd":0,"a":{"a":1,"a":2}}', b'{"a":1,"$b":2}', b'{"\\u0024int":"x"}', b'{"$int\\u0000":"1"}',
    # revision 1.1, SPEC.md §18.2 rule 3: an id in 1..2^31-1 under the rules of $fd
    b'{"$channel":0}', b'{"$channel":-0}', b'{"$channel":1.0}', b'{"$channel":1e0}', b'{"$channel":-1}',
    b'{"$channel":2147483648}', b'{"$channel":99999999999999999999}', b'{"$channel":"1"}',
    b'{"$channel":1,"a":2}',
]
PARSE_FAULTS = [  # what a JSON library meets while it parses
    b'{"a":1,"a":2}', b'{"a":1,"\\u0061":2}', b'{"$$a":1,"$$a":2}', b'{"b":[],"c":0,"b":{}}',
    b'"\\ud800"', b'"\\udc00\\ud800"', b'"x\\ud83dy"', b'"\xff"', b'"\xed\xa0\x80"', b'"\xc0\xaf"',
    b'"\xf4\x90\x80\x80"', b'"a\xe2\x82"', b'9223372036854775808', b'-9223372036854775809',
    b'123456789012345678901234567890', b'1e400', b'-1e400', b'1' + b'0' * 400 + b'.5',
    b'{"a\\u0000":1}', b'{"\\u0000":1}', b'{"\\ud800":1}', b'{"\xff":1}', b'{"k":1,"\xc3":2}',
]
KEY_FAULTS = [  # several faults in one key: '$', U+0000, not Unicode, repeated
    b'{"$\\u0000":1}', b'{"$\\ud800":1}', b'{"$\xff":1}', b'{"a\\u0000\\ud800":1}', b'{"\\u0000\xff":1}',
    b'{"$$\\u0000":1}', b'{"$$\\ud800\\u0000":1}', b'{"x":1,"$\\u0000\xff":2}', b'{"a\\u0000":1,"a\\u0000":2}',
    b'{"\\ud800":1,"\\ud800":2}', b'{"$a":1,"$a":2}', b'{"$$a\\u0000":1,"$$a":2}', b'{"a":1,"a\\u0000":2,"a":3}',
    b'{"$int":"1","\\u0000":2}', b'{"\\u0000":{"$int":"x"}}', b'{"$\\u0000":{"a":1,"a":2}}',
]
GOOD = [
    b'0', b'-0', b'1', b'-1', b'9007199254740993', b'-9223372036854775808', b'9223372036854775807', b'1.5',
    b'-0.0', b'1e-400', b'-1e-400', b'2.5E+3', b'1e308', b'true', b'false', b'null', b'""', b'"a"',
    b'"\\u00e9\\n\\"\\\\\\/"', b'"\\ud83d\\ude00"', b'"\xc3\xa9\xf0\x9f\x98\x80"', b'"\\u0000"', b'[]', b'{}',
    b'{"$int":"-9223372036854775808"}', b'{"$float":"NaN"}', b'{"$float":"-Infinity"}',
    b'{"$bytes":""}', b'{"$bytes":"AAE="}', b'{"$$x":1}', b'{"$$":2}', b'{"$$int":"x"}', b'{"\\u0024\\u0024a":3}',
    b'{"$channel":1}', b'{"$channel":2147483647}', b'{"$$channel":0}',
]
KEYS = [b'a', b'b', b'a', b'$$a', b'\\u0061', b'k', b'', b'$$', b'\xc3\xa9']


class Gen:
    def __init__(self):
        self.fds = 0

    def handle(self):
        kind = rnd.choice([b'fd', b'conn'])
        if rnd.random() < 0.9:
            i = self.fds
        else:  # an index fault: checked after the walk
            i = rnd.choice([self.fds + 1, max(self.fds - 1, 0), 300])
        self.fds += 1
        return b'{"$%s":%d}' % (kind, i)

    def value(self, depth, pfault):
        r = rnd.random()
        if depth > 4 or r < 0.45:
            r2 = rnd.random()
            if r2 < pfault:
                return rnd.choice(rnd.choice([MARKER_FAULTS, PARSE_FAULTS, KEY_FAULTS]))
            if r2 < pfault + 0.1:
                return self.handle()
            return rnd.choice(GOOD)
        if r < 0.7:
            return b'[' + b','.join(self.value(depth + 1, pfault) for _ in range(rnd.randint(0, 4))) + b']'
        if r < 0.72:  # deep: DEPTH_EXCEEDED at the 32nd level when non-empty
            k = rnd.randint(28, 36)
            return b'[' * k + self.value(depth + 1, pfault) + b']' * k
        members = []
        for _ in range(rnd.randint(0, 4)):
            members.append(b'"' + rnd.choice(KEYS) + b'":' + self.value(depth + 1, pfault))
        return b'{' + b','.join(members) + b'}'


def order_docs(count):
    out = []
    for i in range(count):
        g = Gen()
        kind = i % 5
        if kind == 4:  # handles: the count and the indices are checked after the walk
            k = rnd.choice([1, 2, 3, 5, 8, 252, 253, 254, 260])
            items = [g.handle() for _ in range(k)]
            if rnd.random() < 0.5:
                items.insert(rnd.randrange(k + 1), rnd.choice(MARKER_FAULTS + PARSE_FAULTS + KEY_FAULTS))
            if rnd.random() < 0.3:
                items.insert(rnd.randrange(k + 1), b'[' * 33 + b']' * 33)
            out.append(b'[' + b','.join(items) + b']')
            continue
        if kind == 0:  # an early marker fault, a later parse-level fault
            parts = [rnd.choice(MARKER_FAULTS), rnd.choice(PARSE_FAULTS + KEY_FAULTS)]
        elif kind == 1:  # the reverse
            parts = [rnd.choice(PARSE_FAULTS + KEY_FAULTS), rnd.choice(MARKER_FAULTS)]
        else:
            parts = []
        if parts:  # with good values around and nested at random
            parts = [g.value(3, 0.0) for _ in range(rnd.randint(0, 2))] + parts + \
                    [g.value(3, 0.0) for _ in range(rnd.randint(0, 2))]
            for j, p in enumerate(parts):
                for _ in range(rnd.randint(0, 2)):
                    p = rnd.choice([b'[%s]' % p, b'{"k":%s}' % p, b'{"$$k":0,"b":%s}' % p])
                parts[j] = p
            d = b'[' + b','.join(parts) + b']'
        else:  # random values, faults anywhere
            d = g.value(0, 0.06 if kind == 2 else 0.25)
        if rnd.random() < 0.05:  # then a syntax error: INVALID_JSON wins
            if d[-1:] not in (b']', b'}'):
                d = b'[' + d + b']'  # (a scalar then ']' would be a stream of two)
            d = d[:-1] + rnd.choice([b',]', b'}' if d[-1:] == b']' else b']', b' x', b''])
        out.append(d)
    return out


docs = order_docs(n)
mism = 0
names = {}
for d, got in zip(docs, pool.map(run_c, docs)):
    want = run_py(d)
    names[want.split(' ')[0]] = names.get(want.split(' ')[0], 0) + 1
    if got != want:
        mism += 1
        if mism <= 10:
            print('MISMATCH', d[:300], 'chancodec:', got[:100], 'python:', want[:100])
print('order differential: %d documents, %d mismatches (%s)' %
      (len(docs), mism, ', '.join('%s %d' % kv for kv in sorted(names.items()))))
status |= mism > 0
sys.exit(1 if status else 0)
