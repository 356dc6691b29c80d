"""`diffkit eval`: measure a bundle (FID, KID, precision/recall, accuracy, NLL, memorisation), compare two image
sets, or train the domain classifier. Thin: arguments -> `diffkit.evaluate.protocol` -> eval.json, PNG, table."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffkit.cli.arguments import add_quiet, add_spacing, finite_float
from diffkit.errors import DiffkitError
from diffkit.files import check_output, write_json

TRAIN_CLASSIFIER = "train-classifier"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `diffkit eval`."""
    parser = subparsers.add_parser(
        "eval", help="measure a trained model, compare two image sets, or train the domain classifier",
        description="diffkit eval RUN --metrics fid,kid,pr,accuracy,nll,memorisation writes RUN/eval.json; "
                    "diffkit eval --real A --fake B compares two folders or .npz files; "
                    "diffkit eval train-classifier --dataset NAME --out DIR trains the domain classifier.",
    )
    parser.add_argument("run", nargs="?", metavar="RUN", help=f"run directory or bundle (or '{TRAIN_CLASSIFIER}')")
    parser.add_argument("--metrics", default="fid,kid,pr",
                        help="comma-separated: fid, kid, pr, accuracy, nll, memorisation (default fid,kid,pr)")
    parser.add_argument("--n", type=int, default=5000, help="samples to draw (default 5000)")
    parser.add_argument("--sampler", default="dpmpp_2m", help="sampler name (default dpmpp_2m)")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps (default 20)")
    add_spacing(parser, "a grid fitted for the sampler and step count if the run has one, else the run's spacing "
                        "with its own sampler, else the sampler's recommended one", fitted=True)
    parser.add_argument("--guidance", type=finite_float, default=1.0, help="classifier-free guidance scale (default 1)")
    parser.add_argument("--extractor", default="inception", choices=("inception", "domain"),
                        help="features for FID/KID/PR (default inception)")
    parser.add_argument("--classifier", metavar="DIR",
                        help="a saved domain classifier (for domain features and accuracy)")
    parser.add_argument("--split", default="test", help="reference split of the run's dataset (default test)")
    parser.add_argument("--reference-n", type=int, default=None, help="reference images (default: the whole split)")
    parser.add_argument("--nll-steps", type=int, default=100, help="respaced steps for the NLL bound (default 100)")
    parser.add_argument("--nll-n", type=int, default=256, help="reference images for the NLL bound (default 256)")
    parser.add_argument("--batch-size", type=int, default=250, help="images per sampling batch (default 250)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--out", default=None,
                        help="JSON file to write (default RUN/eval.json); train-classifier: the folder to write")
    add_quiet(parser)
    parser.add_argument("--text", action="store_true",
                        help="text glyph models: radical accuracy, meaning retrieval, held-out FID and memorisation "
                             "on the held-out meanings (--n of them, rounded to groups of 32) at --guidance")
    parser.add_argument("--judges", metavar="DIR", default=None,
                        help="with --text: the radical classifier and meaning encoder (trained and saved if absent)")
    parser.add_argument("--judge-steps", type=int, default=3000,
                        help="with --text: judge training steps (default 3000)")
    parser.add_argument("--real", metavar="A", help="folder or .npz of real images (two-set mode)")
    parser.add_argument("--fake", metavar="B", help="folder or .npz of generated images (two-set mode)")
    classifier = parser.add_argument_group(f"{TRAIN_CLASSIFIER}")
    classifier.add_argument("--dataset", help="dataset to train the classifier on (e.g. fashion_mnist)")
    classifier.add_argument("--size", type=int, default=None, help="image size (default: the dataset's)")
    classifier.add_argument("--data-dir", default=None,
                            help="data directory (default $DIFFKIT_DATA or ~/.cache/diffkit)")
    classifier.add_argument("--classifier-steps", type=int, default=2000, help="training steps (default 2000)")
    classifier.add_argument("--width", type=int, default=24, help="classifier width (default 24)")
    classifier.add_argument("--flip", action="store_true", help="random horizontal flips (clothing, not digits)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to bundle evaluation, two-set comparison or classifier training."""
    if args.run == TRAIN_CLASSIFIER:
        return train_classifier(args)
    if args.out:
        check_output(args.out, (".json",))  # before minutes of sampling, not after
    if args.real or args.fake:
        if args.run or not (args.real and args.fake):
            raise DiffkitError("Two-set mode takes both --real and --fake and no RUN; pass exactly those.")
        return compare_sets(args)
    if not args.run:
        raise DiffkitError("Pass a RUN directory, --real A --fake B, or train-classifier.")
    return evaluate_text_run(args) if args.text else evaluate_run(args)


def evaluate_text_run(args: argparse.Namespace) -> int:
    """diffkit eval RUN --text: the text metrics on held-out meanings -> RUN/text-eval.json and a table."""
    from diffkit.bundle import load
    from diffkit.evaluate.text_protocol import format_text_table, glyph_eval_data, judges_for, text_evaluation

    bundle = load(args.run, device=args.device)
    log = lambda text: print(f"... {text}", flush=True)  # noqa: E731
    data = glyph_eval_data(bundle.config.data, bundle.config.text, log=log)
    judges = judges_for(data, args.judges, steps=args.judge_steps, seed=args.seed, log=log)
    sampler, steps, *_ = bundle.settings(args.sampler, args.steps)  # named in the record, so resolved here
    record = text_evaluation(bundle, data, judges, count=args.n, scales=[args.guidance], sampler=sampler,
                             steps=steps, seed=args.seed, batch_size=args.batch_size, log=log)
    directory = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    out = Path(args.out) if args.out else directory / "text-eval.json"
    write_json(out, dict(record, bundle=str(directory)))
    print(format_text_table(record))
    print(f"wrote {out}")
    return 0


def load_classifier_argument(args: argparse.Namespace):
    """The domain classifier named by --classifier, or None."""
    from diffkit.evaluate.protocol import load_domain_model

    return load_domain_model(args.classifier) if args.classifier else None


def evaluate_run(args: argparse.Namespace) -> int:
    """diffkit eval RUN: sample, measure, write eval.json (and memorisation.png), print a table."""
    from diffkit.bundle import load
    from diffkit.evaluate.protocol import Protocol, evaluate_bundle, parse_metrics
    from diffkit.images import save_grid

    protocol = Protocol(metrics=parse_metrics(args.metrics), n=args.n, sampler=args.sampler, steps=args.steps,
                        spacing=args.spacing, guidance=args.guidance, extractor=args.extractor, split=args.split,
                        reference_n=args.reference_n, seed=args.seed, batch_size=args.batch_size,
                        nll_steps=args.nll_steps, nll_n=args.nll_n)
    classifier = load_classifier_argument(args)
    bundle = load(args.run, device=args.device)
    evaluation = evaluate_bundle(bundle, protocol, classifier, device=args.device,
                                 log=lambda text: print(f"... {text}", flush=True))
    directory = Path(args.run) if Path(args.run).is_dir() else Path(args.run).parent
    record = dict(evaluation.record, bundle=str(directory))
    if evaluation.neighbour_grid is not None:
        grid = save_grid(evaluation.neighbour_grid, directory / "memorisation.png", nrow=3)
        record["memorisation_grid"] = str(grid)
    out = Path(args.out) if args.out else directory / "eval.json"
    write_json(out, record)
    print(format_table(record["results"]))
    print(f"wrote {out}")
    return 0


def compare_sets(args: argparse.Namespace) -> int:
    """diffkit eval --real A --fake B: FID / KID / PR of two image sets."""
    from diffkit.evaluate.image_sets import load_image_set
    from diffkit.evaluate.protocol import (IMAGE_SET_METRICS, check_comparable, compare_image_sets, make_extractor,
                                           parse_metrics)

    names = parse_metrics(args.metrics, IMAGE_SET_METRICS)
    real, fake = load_image_set(args.real), load_image_set(args.fake)
    check_comparable(real, fake)  # before the extractor's network is loaded
    extractor = make_extractor(args.extractor, load_classifier_argument(args), device=args.device)
    results = compare_image_sets(real, fake, names, extractor, seed=args.seed)
    print(format_table(results))
    if args.out:
        record = {"real": args.real, "fake": args.fake, "real_count": int(real.shape[0]),
                  "fake_count": int(fake.shape[0]), "extractor": extractor.identity, "results": results}
        write_json(args.out, record)
        print(f"wrote {args.out}")
    return 0


def train_classifier(args: argparse.Namespace) -> int:
    """diffkit eval train-classifier: train and save the domain classifier."""
    from diffkit.config import DataConfig
    from diffkit.evaluate.classifier import save_classifier
    from diffkit.evaluate.protocol import train_dataset_classifier

    if not args.dataset or not args.out:
        raise DiffkitError(f"{TRAIN_CLASSIFIER} needs --dataset NAME and --out DIR.")
    data = DataConfig(dataset=args.dataset, size=args.size, data_dir=args.data_dir)
    model, record = train_dataset_classifier(data, steps=args.classifier_steps, seed=args.seed, width=args.width,
                                             flip=args.flip)
    save_classifier(model, args.out, **record)
    print(format_table({key: value for key, value in record.items() if not isinstance(value, str)}))
    print(f"wrote {args.out}")
    return 0


def format_table(results: dict) -> str:
    """A two-column text table of metric names and values."""
    width = max((len(name) for name in results), default=6)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  ------"]
    for name, value in results.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"{name:<{width}}  {shown}")
    return "\n".join(lines)
