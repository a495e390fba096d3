"""Write k6/data/texts.json: synthetic English reviews for the load tests.

The texts come from templates in this file and a seeded random generator, so their origin is
known, there is no licence question, and running the script again gives the same bytes.
Lengths vary the way real traffic does: many one-liners, some paragraphs, a few long reviews
(a few hundred words) that reach the model's 512-token window.

    python k6/data/generate.py            # rewrites k6/data/texts.json
    python k6/data/generate.py --check    # exits 1 when the committed file is stale
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

SEED = 20260124
TEXT_COUNT = 500
OUTPUT = Path(__file__).with_name("texts.json")

DOMAINS = {
    "product": {
        "things": ["headphones", "blender", "laptop", "coffee maker", "backpack", "phone case",
                   "vacuum cleaner", "running shoes", "desk lamp", "keyboard", "air fryer", "tent"],
        "aspects": ["battery life", "build quality", "price", "design", "sound", "packaging",
                    "instructions", "weight", "noise level", "warranty", "charging cable", "fit"],
        "actions": ["returned it after a week", "bought a second one for my sister",
                    "use it every single morning", "took it on a two week trip",
                    "compared it with three other brands", "set it up in ten minutes"],
    },
    "movie": {
        "things": ["film", "movie", "sequel", "documentary", "thriller", "comedy", "animated feature",
                   "period drama", "horror movie", "space opera", "romantic comedy", "biopic"],
        "aspects": ["plot", "acting", "soundtrack", "pacing", "ending", "dialogue", "cinematography",
                    "lead performance", "supporting cast", "special effects", "script", "runtime"],
        "actions": ["watched it twice in one weekend", "walked out halfway through",
                    "saw it at the festival premiere", "streamed it with friends",
                    "fell asleep during the second act", "recommended it to everyone at work"],
    },
    "service": {
        "things": ["restaurant", "hotel", "airline", "bank", "delivery service", "gym", "hair salon",
                   "car rental", "internet provider", "dentist", "bakery", "repair shop"],
        "aspects": ["staff", "waiting time", "customer support", "cleanliness", "booking process",
                    "prices", "location", "parking", "refund policy", "opening hours", "app", "menu"],
        "actions": ["called them three times", "booked a table for six", "stayed there for four nights",
                    "waited forty minutes on hold", "filed a complaint by email",
                    "have been a customer for years"],
    },
}

POSITIVE = ["excellent", "wonderful", "reliable", "delightful", "impressive", "fantastic", "solid",
            "charming", "thoughtful", "superb", "friendly", "brilliant"]
NEGATIVE = ["terrible", "disappointing", "flimsy", "rude", "boring", "awful", "overpriced", "clumsy",
            "broken", "tedious", "useless", "sloppy"]
INTENSIFIERS = ["really", "truly", "quite", "surprisingly", "absolutely", "rather", "incredibly", ""]

SENTENCE_TEMPLATES = [
    "The {aspect} is {intensifier} {adjective}.",
    "I {action}, and the {aspect} was {adjective}.",
    "Honestly, this {thing} has the most {adjective} {aspect} I have seen in a long time.",
    "My only complaint is the {aspect}, which felt {adjective}.",
    "Compared with the last {thing} I tried, the {aspect} is {intensifier} {adjective}.",
    "If you care about the {aspect}, you will find it {adjective}.",
    "We {action}; overall the experience was {adjective}.",
    "The {aspect} started out {adjective} but the {other_aspect} was {other_adjective}.",
    "Would I recommend this {thing}? The {aspect} alone makes it {adjective}.",
    "After a month, the {aspect} is still {intensifier} {adjective}.",
    "Nobody warned me that the {aspect} would be so {adjective}.",
    "Five stars for the {aspect}, which was {adjective}, zero for the {other_aspect}.",
]

FRAGMENTS = [
    "{Adjective} {thing}.", "{Adjective} {aspect}, {other_adjective} {other_aspect}.",
    "Simply {adjective}!", "Not worth it.", "Would buy again.", "Never again.",
    "{Adjective}, {intensifier} {adjective}.", "The {aspect}? {Adjective}.",
    "Loved the {aspect}.", "Hated the {aspect}.", "Meh.", "Best {thing} ever!",
]


def sentiment_words(rng: random.Random, lean: float) -> tuple[str, str]:
    """Two adjectives; `lean` is the chance each one is positive."""
    pick = lambda: rng.choice(POSITIVE if rng.random() < lean else NEGATIVE)  # noqa: E731
    return pick(), pick()


def fill(template: str, rng: random.Random, domain: dict, lean: float) -> str:
    adjective, other_adjective = sentiment_words(rng, lean)
    aspect, other_aspect = rng.sample(domain["aspects"], 2)
    text = template.format(
        thing=rng.choice(domain["things"]), aspect=aspect, other_aspect=other_aspect,
        action=rng.choice(domain["actions"]), intensifier=rng.choice(INTENSIFIERS),
        adjective=adjective, Adjective=adjective.capitalize(), other_adjective=other_adjective,
    )
    return " ".join(text.split())  # an empty intensifier leaves a double space


def sentence_count(rng: random.Random) -> int:
    """0 means a short fragment; the mix gives one-liners up to reviews of a few hundred words."""
    roll = rng.random()
    if roll < 0.30:
        return 0
    if roll < 0.65:
        return rng.randint(1, 3)
    if roll < 0.90:
        return rng.randint(4, 10)
    return rng.randint(15, 40)


def review(rng: random.Random) -> str:
    domain = DOMAINS[rng.choice(sorted(DOMAINS))]
    lean = rng.choice([0.1, 0.3, 0.5, 0.7, 0.9])  # mostly negative .. mostly positive
    count = sentence_count(rng)
    if count == 0:
        return fill(rng.choice(FRAGMENTS), rng, domain, lean)
    return " ".join(fill(rng.choice(SENTENCE_TEMPLATES), rng, domain, lean) for _ in range(count))


def generate(seed: int = SEED, count: int = TEXT_COUNT) -> dict:
    rng = random.Random(seed)
    texts = [review(rng) for _ in range(count)]
    return {
        "about": "Synthetic product, movie and service reviews written by k6/data/generate.py.",
        "seed": seed,
        "texts": texts,
    }


def render(document: dict) -> str:
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    args = parser.parse_args()
    content = render(generate())
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != content:
            print(f"{OUTPUT} is stale: run python k6/data/generate.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(content, encoding="utf-8")
    texts = json.loads(content)["texts"]
    words = sorted(len(text.split()) for text in texts)
    print(f"wrote {OUTPUT.name}: {len(texts)} texts, {len(content.encode()) // 1024} KiB, "
          f"words min {words[0]} median {words[len(words) // 2]} max {words[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
