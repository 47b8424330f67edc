#!/usr/bin/env python3
"""Differential check of SPEC.md §12.4 rule 4 (INVALID_JSON wins): documents
that start with a duplicate key, mutated at random; chancodec must call a
document INVALID_JSON exactly when Python's json module (the oracle: it
accepts duplicates, lone surrogates and out-of-range numbers, so only syntax
decides) rejects it.   syntax_diff.py CHANCODEC N [SEED]"""
import json, random, subprocess, sys
C = sys.argv[1]; n = int(sys.argv[2]); rnd = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 1)
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
docs = [mutate(doc()) for _ in range(n)]
mism = 0
for d in docs:
    if '\n' in d: continue
    try:  # one document only: a valid first document followed by more is a stream case
        t = d.strip(' \t\r')
        _v, end = json.JSONDecoder().raw_decode(t)
        if end != len(t): continue
    except ValueError:
        pass
    r = subprocess.run([C, 'encode', '-o', '/dev/null'], input=(d + '\n').encode(), capture_output=True)
    c_invalid = b'INVALID_JSON' in r.stderr
    if c_invalid == py_syntax_ok(d):
        # both say fine but C INVALID_JSON, or vice versa
        mism += 1
        if mism <= 5: print('MISMATCH', repr(d), r.stderr.decode().strip()[:120])
print('syntax differential: %d documents, %d mismatches' % (len(docs), mism))
sys.exit(1 if mism else 0)
