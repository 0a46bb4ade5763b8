"""One run of the long-tail benchmark, in its own process.

    python -m mmlongtail_bench.benchmark.job '<RunSpec as JSON>'

:func:`mmlongtail_bench.benchmark.run_benchmark` starts these.
"""
import json
import sys

from mmlongtail_bench.benchmark.run import RunSpec, train_and_evaluate


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit(f'usage: python -m {__spec__.name} SPEC_JSON')
    train_and_evaluate(RunSpec(**json.loads(argv[0])))


if __name__ == '__main__':
    main()
