"""The ``label_mapping`` task: animals and fruits mapped to arbitrary colour words.

Each input is an English noun (or, once the bare nouns run out, a short phrase such as
``"my sparrow"``); animals are labelled ``"blue"`` and fruits ``"red"``. Nothing in a word
says which colour it gets, so a small model cannot guess the mapping from an instruction
like "classify the word"; it has to learn it, either from examples put into its prompt or
from a rule stating the mapping. That makes it a quick, honest test of prompt training.

The word lists avoid nouns that are themselves colours (orange, lime, plum, ...), that
contain a colour (blueberry), that belong to both groups (kiwi) or that have a very common
second meaning (date, turkey, seal).

Generation is deterministic in ``seed``: classes are balanced (they differ by at most one
example), every input is unique, and bare nouns are used before any phrase. With
``size <= 2 * min(len(ANIMALS), len(FRUITS))`` no noun appears twice, so no noun can sit in
both a train and a test split.

>>> examples = generate(6, seed=0)
>>> sorted(e.target for e in examples)
['blue', 'blue', 'blue', 'red', 'red', 'red']
>>> generate(6, seed=0) == examples
True
"""

from __future__ import annotations

import numpy as np

from dlnflow.core.example import Example

CLASSES: tuple[str, ...] = ("blue", "red")
"""The output classes, in the order a spec should list them: animals -> blue, fruits -> red."""

ANIMALS: tuple[str, ...] = (
    "alligator", "ant", "badger", "bear", "beaver", "bee", "beetle", "bison", "buffalo", "butterfly",
    "camel", "cat", "cheetah", "chicken", "cow", "crocodile", "crow", "deer", "dog", "dolphin",
    "donkey", "duck", "eagle", "elephant", "falcon", "ferret", "fox", "frog", "giraffe", "goat",
    "gorilla", "hamster", "hawk", "hedgehog", "heron", "hippo", "horse", "kangaroo", "koala", "leopard",
    "lion", "lizard", "llama", "monkey", "moose", "mouse", "octopus", "otter", "owl", "panda",
    "parrot", "penguin", "pig", "pigeon", "rabbit", "raccoon", "rat", "rhino", "shark", "sheep",
    "skunk", "sloth", "snake", "sparrow", "spider", "squirrel", "swan", "tiger", "toad", "tortoise",
    "walrus", "weasel", "whale", "wolf", "zebra",
)

FRUITS: tuple[str, ...] = (
    "apple", "apricot", "avocado", "banana", "boysenberry", "breadfruit", "cantaloupe", "clementine",
    "cloudberry", "coconut", "cranberry", "currant", "dragonfruit", "durian", "elderberry", "fig", "grape",
    "grapefruit", "guava", "honeydew", "huckleberry", "jackfruit", "jujube", "kumquat", "lemon",
    "lingonberry", "longan", "loquat", "lychee", "mango", "mangosteen", "melon", "mulberry", "nectarine",
    "papaya", "passionfruit", "pear", "persimmon", "pineapple", "plantain", "pomegranate", "pomelo",
    "quince", "raisin", "rambutan", "raspberry", "satsuma", "starfruit", "strawberry", "tamarind",
    "tangerine", "watermelon", "yuzu",
)

DETERMINERS: tuple[str, ...] = ("the", "my", "this", "that", "your", "our", "one", "his", "her")
"""Neutral words put before a noun to make more inputs once the bare nouns are used up."""


def _pool(nouns: tuple[str, ...], rng: np.random.Generator) -> list[str]:
    """Every input for one class: bare nouns first (shuffled), then phrases (shuffled)."""
    bare = [nouns[i] for i in rng.permutation(len(nouns))]
    phrases = [f"{d} {n}" for d in DETERMINERS for n in nouns]
    return bare + [phrases[i] for i in rng.permutation(len(phrases))]


def max_size() -> int:
    """The largest ``size`` that still gives unique inputs and balanced classes."""
    per_class = min(len(ANIMALS), len(FRUITS)) * (1 + len(DETERMINERS))
    return 2 * per_class


def generate(size: int, seed: int = 0) -> list[Example]:
    """``size`` examples, classes interleaved in random order, deterministic in ``seed``."""
    if not 2 <= size <= max_size():
        raise ValueError(f"label_mapping size must be between 2 and {max_size()}, got {size}")
    rng = np.random.default_rng(seed)
    n_blue = (size + 1) // 2
    blue = [Example(word, CLASSES[0]) for word in _pool(ANIMALS, rng)[:n_blue]]
    red = [Example(word, CLASSES[1]) for word in _pool(FRUITS, rng)[:size - n_blue]]
    out: list[Example] = []
    for i in range(n_blue):
        pair = [blue[i]] + ([red[i]] if i < len(red) else [])
        out.extend(pair[j] for j in rng.permutation(len(pair)))
    return out
