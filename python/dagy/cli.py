"""dagy.cli - the `dagy` command: `dagy build FLOW.py` makes a flow artifact, `dagy graph
FLOW.py` prints the DAG as Graphviz DOT. Exit codes: 0 done, 2 the flow or the arguments are
wrong (the message says what and where)."""

import argparse
import json
import os
import sys

from . import __version__
from . import build as _build
from . import spec as _spec

EXIT_INVALID = 2


def _parser():
    p = argparse.ArgumentParser(prog="dagy", description="Author dagy flows in Python.")
    p.add_argument("--version", action="version", version="dagy %s" % __version__)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    b = sub.add_parser("build", help="build a flow artifact (zip) from a flow file",
                       description="Imports FLOW.py by its path under the root, builds "
                       "flow_spec.json, checks it like dagy-agent does and writes a deterministic "
                       "zip with flow_spec.json, metadata.json, the sources under the root and "
                       "the dagy SDK. Prints a JSON summary on stdout.")
    b.add_argument("flow", metavar="FLOW.py")
    b.add_argument("--output", "-o", metavar="FILE",
                   help="artifact path (default ROOT/dist/NAME-VERSION.zip)")
    b.add_argument("--version", dest="flow_version", metavar="V",
                   help="flow version (overrides the DAG's version=)")
    b.add_argument("--name", metavar="N", help="flow name (overrides the DAG's name)")
    b.add_argument("--root", metavar="DIR", help="project root: the artifact's root and where "
                   "module paths start (default: the current directory)")
    b.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="pack only files matching GLOB (repeatable)")
    b.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out files and directories matching GLOB (repeatable)")
    b.add_argument("--dag", metavar="NAME", help="the DAG to build when the file defines several")
    b.add_argument("--agent", metavar="PATH", help="dagy-agent binary used to check the spec "
                   "(default $DAGY_AGENT, then dagy-agent on PATH)")
    b.add_argument("--no-agent", action="store_true",
                   help="check the spec with the Python rules only")
    b.add_argument("--no-sdk", action="store_true",
                   help="do not pack the dagy SDK (the image or a dependency package has it)")
    g = sub.add_parser("graph", help="print a flow file's DAG as Graphviz DOT",
                       description="Imports FLOW.py like `dagy build` and prints its DAG as DOT.")
    g.add_argument("flow", metavar="FLOW.py")
    g.add_argument("--root", metavar="DIR", help="project root (default: the current directory)")
    g.add_argument("--dag", metavar="NAME", help="the DAG to show when the file defines several")
    return p


def _graph(args):
    root = os.path.abspath(args.root or os.getcwd())
    dag, _ = _build.load_dag(args.flow, root, args.dag)
    try:
        spec = dag.to_spec(root=root)
        _spec.validate(spec)
    except Exception as e:  # DagyError, SpecError
        raise _build.BuildError("%s: %s" % (args.flow, e))
    sys.stdout.write(_spec.to_dot(spec))
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help(sys.stderr)
        return EXIT_INVALID
    try:
        if args.command == "graph":
            return _graph(args)
        r = _build.build(args.flow, output=args.output, version=args.flow_version,
                         name=args.name, root=args.root, include=args.include,
                         exclude=args.exclude, dag_name=args.dag, agent=args.agent,
                         use_agent=not args.no_agent, vendor_sdk=not args.no_sdk)
    except _build.BuildError as e:
        print("dagy %s: error: %s" % (args.command, e), file=sys.stderr)
        return EXIT_INVALID
    print(json.dumps(r, indent=2))
    return 0
