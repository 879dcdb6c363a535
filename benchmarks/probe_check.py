"""Are the probe banks' voices fresh? Each probe voice against the shipped model's training voices.

    python benchmarks/probe_check.py [--bank-seeds 0 1 2] [--probe-voices 12]

A probe bank (`weighter bank --engines espeak --probe-voices 12 [--bank-seed N]`) holds fresh
invented speakers and their source siblings, drawn from random streams of their own; models are
judged on it as on voices they never heard. Random draws can still land near a training voice.
This asks bank.sounds_like (the distinctness check's test for invented voices: more than a
quarter of one identity's clips landing on the other, leave-one-out nearest centroid on log-mel
statistics) of every probe identity against the train split of the bank the shipped model was
trained on (`--invented-voices 100 --source-siblings 100`: 811 identities), and lists those
over CONFUSED (a half: the test for installed voices). For scale, the same of the default
bank's validation and held-out identities (whose near-copies among the invented train voices
the bank's check removed). Prints one JSON object per bank.
"""

import argparse
import json
import time

from weighter.corpus import BankSpec, open_or_build_bank
from weighter.corpus.bank import CONFUSED, sounds_like


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bank-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--probe-voices", type=int, default=12)
    args = parser.parse_args()
    train = open_or_build_bank(BankSpec(invented_voices=100, source_siblings=100), progress=False)
    banks = [(f"probe bank seed {seed}", BankSpec(engines=("espeak",), probe_voices=args.probe_voices, seed=seed), None)
             for seed in args.bank_seeds]
    banks += [(f"{split} split (the default bank)", BankSpec(), split)
              for split in ("validation", "heldout")]  # what the figures' own voices look like, for scale
    for name, spec, split in banks:
        started = time.time()
        bank = open_or_build_bank(spec, progress=False)
        flagged = sounds_like(bank, train, "train", bank_split=split)
        persons = sorted({bank.identity(i)["person"] for i in flagged})
        strong = {i: v for i, v in flagged.items() if v[1] > CONFUSED}
        print(json.dumps({"bank": name, "identities": len(bank.identities(split)),
                          "train_identities": len(train.identities("train")),
                          "sound_like_a_train_identity": {i: list(v) for i, v in sorted(flagged.items())},
                          "persons_affected": persons,
                          f"of_those_over_{CONFUSED}": sorted(strong), "seconds": round(time.time() - started)}))


if __name__ == "__main__":
    main()
