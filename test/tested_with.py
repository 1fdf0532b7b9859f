"""The "Tested with" table of README.md, from the results of test/check.sh.

    tested_with.py RESULTS DATE            # print the table (Markdown)
    tested_with.py --into README.md TABLE  # replace README's table with TABLE
    tested_with.py --check README.md TABLE # exit 1 if README's table differs

RESULTS has one line per cell, written by check.sh:
    pg|major|version|source|suite|passed|failed
    dj|line|variant|environment|passed|failed|load_ok
"""
import re
import sys

BEGIN = "<!-- tested-with:begin (written by test/check.sh from its last full run) -->"
END = "<!-- tested-with:end -->"

PG_SUITES = [("build", "build (-Werror), install"), ("regress", "pg_regress"),
             ("isolation", "isolation"), ("tap", "TAP"), ("fuzz", "fuzz"), ("bench", "bench smoke")]
DJ_VARIANTS = [("psycopg2", "psycopg2"), ("psycopg", "psycopg 3"),
               ("psycopg-ssb", "psycopg 3, server-side binding"), ("psycopg-pool", "psycopg 3, pool")]


def cell(p, f, unit="tests"):
    p, f = int(p), int(f)
    if f == 0 and p > 0:
        return "✓ %d" % p if unit else "✓"
    return "✗ %d of %d failed" % (f, p + f)


def table(results_path, date):
    pg, dj = {}, {}
    pg_info, dj_info = {}, {}
    with open(results_path) as fh:
        for line in fh:
            parts = line.rstrip("\n").split("|")
            if parts[0] == "pg":
                _, major, version, source, suite, p, f = parts
                pg.setdefault(int(major), {})[suite] = (p, f)
                pg_info[int(major)] = (version, source)
            elif parts[0] == "dj":
                _, line_, variant, env, p, f, load = parts
                dj.setdefault(line_, {})[variant] = (env, p, f, load)
    out = ["Last full run of `bash test/check.sh`: %s. Numbers are tests (TAP: assertions) passed."
           % date, ""]
    out.append("| PostgreSQL | from | " + " | ".join(h for _, h in PG_SUITES) + " |")
    out.append("|---|---|" + "---|" * len(PG_SUITES))
    for major in sorted(pg):
        version, source = pg_info[major]
        cells = []
        for suite, _ in PG_SUITES:
            if suite in pg[major]:
                p, f = pg[major][suite]
                cells.append(cell(p, f, unit=None if suite == "build" else "tests"))
            else:
                cells.append("—")
        out.append("| %s | %s | %s |" % (version, source, " | ".join(cells)))
    out.append("")
    default = [pg_info[m][0] for m in pg if "fuzz" in pg[m]]
    out.append("Django cells: the router's suite (with the pgbouncer suite) and the load workload "
               "(zero stale reads), against servers of %s." % (
                   "PostgreSQL %s (the default major)" % default[0] if default else "the default major"))
    out.append("")
    out.append("| Django | Python | " + " | ".join(h for _, h in DJ_VARIANTS) + " |")
    out.append("|---|---|" + "---|" * len(DJ_VARIANTS))

    def order(line_):
        return (0,) if line_ == "debian" else (1,) + tuple(int(x) for x in line_.split("."))

    for line_ in sorted(dj, key=order):
        django = python = ""
        cells = []
        for variant, _ in DJ_VARIANTS:
            if variant not in dj[line_]:
                cells.append("—")
                continue
            env, p, f, load = dj[line_][variant]
            m = re.search(r"Python (\S+), Django (\S+), (\S+) (\S+),", env)
            if m:
                python, django = m.group(1), m.group(2)
                drv = "%s %s" % (m.group(3), m.group(4))
            else:
                drv = "?"
            c = cell(p, f) + " + load " + ("✓" if load == "1" else "✗")
            cells.append("%s (%s)" % (c, drv))
        if "environment" in dj[line_]:
            cells = ["✗ environment not built"] * len(DJ_VARIANTS)
        label = "%s%s" % (django or line_, " (Debian)" if line_ == "debian" else "")
        out.append("| %s | %s | %s |" % (label, python or "?", " | ".join(cells)))
    return "\n".join(out) + "\n"


def readme_block(text):
    m = re.search(re.escape(BEGIN) + r"\n(.*?)" + re.escape(END), text, re.S)
    return m


def main(argv):
    if argv[1] in ("--into", "--check"):
        readme, table_path = argv[2], argv[3]
        text = open(readme).read()
        new = open(table_path).read()
        m = readme_block(text)
        if m is None:
            print("%s has no tested-with markers" % readme, file=sys.stderr)
            return 1
        old = re.sub(r"^Last full run.*\n", "", m.group(1))
        if argv[1] == "--check":
            return 0 if old == re.sub(r"^Last full run.*\n", "", new) else 1
        with open(readme, "w") as fh:
            fh.write(text[:m.start(1)] + new + text[m.end(1):])
        return 0
    sys.stdout.write(table(argv[1], argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
