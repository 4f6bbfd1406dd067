# Copyright (c) gpuops.sharing contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""MIG layouts: profile names, the placement solver and the change plan. Private to this collection.

Pure logic, no I/O: everything here works on plain data read from the driver
(``_nvml.Nvml.gi_profiles`` / ``gpu_instances``) and never imports ansible, so
the boot-time re-apply on the host runs the very same code.

Terms:
  GI profile      what ``nvidia-smi mig -lgip`` lists (``3g.40gb``; id, slices, placements)
  MIG device      a compute instance; named like mig-parted does: ``3g.40gb`` when it spans its GPU
                  instance, ``1c.3g.40gb`` when it uses 1 of the GI's 3 compute slices
  layout          what a GPU should hold: a list of GI specs, each a GI profile id and the sizes
                  (compute slices) of its compute instances
"""

from __future__ import annotations

import difflib
import re
from collections import Counter

# The grammar of a MIG device name, exactly as go-nvlib parses it (NVIDIA/go-nvlib
# pkg/nvlib/device/mig_profile.go, parseMigProfile / parseMigProfileFields /
# parseMigProfileAttributes, commit 3c161560521e3208792199f2ed0d559a5f3ae4f4), which is what
# mig-parted checks a file's mig-devices names with (AssertValidMigProfileFormat):
#   [<C>c.]<G>g.<GB>gb[(+|-)<attr>[,<attr>...]]
# numbers are ASCII digits (Go's strconv.Atoi: no spaces, no fullwidth digits; leading zeros
# are fine; 0 parses and is refused only against a device, as is C > G); one sign only (a
# name with both '+' and '-' is refused); attributes are non-empty, unique, made of ASCII
# letters, digits and dots, neither starting with a digit or a dot nor ending with a dot.
# Case matters: "1G.5GB" is not a name (parseMigProfileField wants the suffix "g"/"gb").
_ATTR = r"[A-Za-z](?:[A-Za-z0-9.]*[A-Za-z0-9])?"
PROFILE_RE = re.compile(r"(?:(?P<c>[0-9]+)c\.)?(?P<g>[0-9]+)g\.(?P<gb>[0-9]+)gb"
                        r"(?P<attrs>[+-]" + _ATTR + r"(?:," + _ATTR + r")*)?")
_GO_INT_MAX = 2 ** 63 - 1   # strconv.Atoi's range on 64-bit Go

MIB = 1024 * 1024
GIB = 1024 * MIB

_FORMAT_HELP = ("expected <G>g.<N>gb[+attr] (a GPU instance, e.g. 3g.40gb or 1g.10gb+me) or "
                "<C>c.<G>g.<N>gb (a compute instance inside one, e.g. 1c.3g.40gb)")


class MigError(Exception):
    """Bad input or an impossible request, found before anything changes."""


# --------------------------------------------------------------------------- profile names

def guess_profile(text: str) -> str | None:
    """A well-formed MIG device name that a malformed one probably means, or None.

    Catches the usual slips: ``1g.10gb.me`` (mig-parted's config *names* write ``+me`` as
    ``.me``), ``1g10gb``, ``1g.10g``, ``1g.10gbb``, ``1G.10GB``, spaces.
    """
    flat = re.sub(r"\s+", "", str(text).lower())
    match = re.match(r"^(?:(\d+)c\W*)?(\d+)g\W*(\d+)(?:gb?|b)*(?:[.+_]?([a-z][a-z0-9.]*))?[.+_-]*$", flat)
    if not match:
        return None
    c, g, gb, attr = match.groups()
    guess = (f"{c}c." if c and c != g else "") + f"{g}g.{gb}gb" + (f"+{attr.strip('.')}" if attr else "")
    return guess if PROFILE_RE.fullmatch(guess) and guess != str(text) else None


def _format_problem(text: str) -> str:
    """Why go-nvlib refuses ``text`` as a MIG device name (for the message)."""
    if text == "":
        return "the name is empty"
    if text != text.strip() or re.search(r"\s", text):
        return "it contains whitespace"
    if "+" in text and "-" in text:
        return "it has both '+' and '-' attributes"
    if re.search(r"[^\x00-\x7f]", text):
        return "it contains a character that is not ASCII (digits must be 0-9)"
    sign = re.search(r"[+-]", text)
    head, attrs = (text[:sign.start()], text[sign.end():]) if sign else (text, None)
    if attrs is not None:
        names = attrs.split(",")
        if len(set(names)) != len(names):
            return "an attribute is given twice"
        if any(not re.fullmatch(_ATTR, a) for a in names):
            return "an attribute is empty or malformed (letters, digits and dots, starting with a letter)"
    if head != head.lower():
        return "it is not in lower case"
    return "the fields are not <C>c.<G>g.<GB>gb"


def parse_profile(text: str) -> dict:
    """``1c.3g.20gb`` -> {"c": 1, "g": 3, "gb": 20, "attrs": ""}; ``1g.5gb+me`` -> attrs "+me".

    The format check only (go-nvlib's grammar, see PROFILE_RE): ``0g.0gb`` or ``4c.3g.40gb``
    parse, and are refused when resolved against a device (``resolve_gi_profile``).
    """
    text = str(text)
    match = PROFILE_RE.fullmatch(text)
    attrs = (match.group("attrs") or "") if match else ""
    names = attrs[1:].split(",") if attrs else []
    values = [int(v) for v in (match.group("c", "g", "gb") if match else ()) if v is not None]
    if not match or len(set(names)) != len(names) or any(v > _GO_INT_MAX for v in values):
        guess = guess_profile(text)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        why = _format_problem(text) if not match or len(set(names)) != len(names) else "a number is too large"
        raise MigError(f"'{text}' is not a MIG profile name{hint}: {_FORMAT_HELP} ({why})")
    g = int(match.group("g"))
    c = int(match.group("c")) if match.group("c") else g
    return {"c": c, "g": g, "gb": int(match.group("gb")), "attrs": attrs}


def check_slices(want: dict, text: str) -> None:
    """Refuse what parses but names no MIG device on any GPU (``0g.0gb``, ``4c.3g.40gb``)."""
    if want["g"] < 1 or want["c"] < 1:
        raise MigError(f"profile '{text}' names a MIG device with 0 compute slices, which no GPU has")
    if want["c"] > want["g"]:
        raise MigError(f"'{text}': a compute instance cannot use {want['c']} of {want['g']} compute slices")


def attr_key(attrs: str) -> tuple:
    """``+me,gfx`` and ``+gfx+me`` -> ('+gfx', '+me'): attributes compared as a set, as mig-parted does."""
    return tuple(sorted({sign + name for sign, group in re.findall(r"([+-])([^+-]+)", attrs or "")
                         for name in group.split(",") if name}))


def _attrs_of(name: str) -> str:
    parsed = PROFILE_RE.fullmatch(name.lower())
    return (parsed.group("attrs") or "") if parsed else ""


def _gb_of(profile: dict) -> int:
    parsed = PROFILE_RE.fullmatch(profile["name"].lower())
    return int(parsed.group("gb")) if parsed else round(profile["memory_mib"] / 1024)


def mig_parted_gb(profile: dict) -> int | None:
    """The GB figure mig-parted puts in this profile's name, or None when the GPU's memory is unknown.

    mig-parted names a profile by its share of the GPU's memory, rounded up to eighths, times
    the GPU's memory in whole GB (rounded up); on most boards that equals the driver's name.
    """
    total = profile.get("gpu_memory_bytes")
    memory = profile.get("memory_mib")
    if not total or not memory:
        return None
    eighths = -(-(memory * MIB * 8) // total)
    total_gb = -(-total // GIB)
    return (eighths * total_gb + 4) // 8


def _profile_gbs(profile: dict) -> set[int]:
    gbs = {_gb_of(profile)}
    alias = mig_parted_gb(profile)
    if alias is not None:
        gbs.add(alias)
    return gbs


def _same_kind(profile: dict, want: dict) -> bool:
    return profile["slices"] == want["g"] and attr_key(_attrs_of(profile["name"])) == attr_key(want["attrs"])


# The same driver profile is named a GB or so differently by different driver branches:
# HGX GB200's 1g.24gb / 2g.47gb (R570, NVIDIA/gpu-operator PR #1303) are 1g.23gb / 2g.45gb on
# later drivers (NVIDIA/mig-parted issue #227, which mig-parted's exact matching fails on), and
# A100 80GB's 3g.40gb was 3g.39gb on R535/R545 (NVIDIA/mig-parted issue #31).  A name within
# this drift (5% of the larger figure: those are 2.5 to 4.3%) of a profile of the same compute
# slices and attributes is taken for it, with a note.  Small profiles get no slack: 1g.5gb
# (A100, an eighth of the memory) is not an A30's 1g.6gb (a quarter).
NAME_DRIFT_SHARE = 0.05


def _drift(profile: dict, gb: int) -> int | None:
    """How many GB the name's memory is off this profile's names, or None beyond the drift."""
    off, known = min((abs(known - gb), known) for known in _profile_gbs(profile))
    return off if off <= NAME_DRIFT_SHARE * max(gb, known) else None


def resolve_gi_profile(profiles: list[dict], text: str, model: str = "this GPU",
                       notes: list[str] | None = None) -> tuple[dict, int]:
    """Find the driver's GI profile a user's profile name means; returns (profile, CI slices).

    A name means a profile when its compute slices and attributes (``+me``, ``+gfx``, ``-me``,
    in any order) are the profile's and its memory is the profile's as the driver names it
    (``nvidia-smi mig -lgip``) or as mig-parted does (from the profile's share of the GPU's
    memory).  Driver branches name the same profile a GB apart (1g.23gb and 1g.24gb on HGX
    GB200), so a name within NAME_DRIFT_SHARE of exactly one such profile is taken for it and a
    note saying so is appended to ``notes``.  Anything further off is refused, naming this
    GPU's closest profiles: a configuration for another model (1g.5gb on an H100, 3g.90gb on
    an H200) must not silently become a different layout.
    """
    want = parse_profile(text)
    check_slices(want, text)
    gi_name = re.sub(r"^\d+c\.", "", str(text).strip().lower())
    named = [p for p in profiles if p["name"].lower() == gi_name]
    if named:
        return named[0], want["c"]
    aliased = [p for p in profiles if _same_kind(p, want) and want["gb"] in _profile_gbs(p)]
    if aliased:
        return aliased[0], want["c"]
    near = sorted(((off, p) for p in profiles if _same_kind(p, want)
                   for off in [_drift(p, want["gb"])] if off is not None), key=lambda pair: pair[0])
    if len(near) > 1 and near[0][0] == near[1][0]:
        raise MigError(f"profile '{text}' is ambiguous on {model}: it is as close to "
                       f"{near[0][1]['name']} as to {near[1][1]['name']}; name one of them")
    if near:
        chosen = near[0][1]
        if notes is not None:
            note = (f"profile '{text}' is taken as {device_name(chosen, want['c'])} "
                    f"(profile ID {chosen['id']}) on {model}: same slices, named {near[0][0]} GB apart (driver "
                    "branches name profiles differently); write that name to silence this note")
            if note not in notes:
                notes.append(note)
        return chosen, want["c"]
    raise MigError(unknown_profile_message(profiles, text, model))


def unknown_profile_message(profiles: list[dict], text: str, model: str) -> str:
    """'profile X does not exist on <model>', the closest names valid there, and all its profiles."""
    want = parse_profile(text)
    gi_name = re.sub(r"^\d+c\.", "", str(text).strip().lower())

    def similarity(p: dict) -> float:
        return difflib.SequenceMatcher(None, gi_name, p["name"].lower()).ratio()

    same_slices = sorted((p for p in profiles if p["slices"] == want["g"]),
                         key=lambda p: (not _same_kind(p, want), min(abs(gb - want["gb"]) for gb in _profile_gbs(p)),
                                        -similarity(p)))
    by_name = {p["name"].lower(): p for p in profiles}
    close = same_slices[:2] + [by_name[n] for n in difflib.get_close_matches(gi_name, list(by_name), n=2, cutoff=0.75)]
    suggestions: list[str] = []
    for p in close:
        name = device_name(p, min(want["c"], p["slices"]))
        if name not in suggestions:
            suggestions.append(name)
    hint = (" (did you mean " + " or ".join(f"'{n}'" for n in suggestions[:3]) + "?)") if suggestions else ""
    other_model = ""
    if not any(p["slices"] == want["g"] for p in profiles):
        other_model = f" (it has no {want['g']}-slice GPU instance profile)"
    elif any(_same_kind(p, want) for p in profiles):
        other_model = (f"; no {want['g']}-slice{want['attrs']} profile of this GPU has {want['gb']} GB: "
                       "is the configuration (or its device-filter) meant for another GPU model?")
    listing = " Its" if other_model.endswith("?") else "; its"
    return (f"profile '{text}' does not exist on {model}{hint}{other_model}{listing} GPU instance profiles are: "
            + ", ".join(p["name"] for p in profiles))


def device_name(gi_profile: dict, ci_slices: int) -> str:
    """A MIG device's name as mig-parted writes it."""
    return gi_profile["name"] if ci_slices == gi_profile["slices"] else f"{ci_slices}c.{gi_profile['name']}"


# --------------------------------------------------------------------------- placements

def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[0] + b[1] and b[0] < a[0] + a[1]


def ci_placements(gi_slices: int, ci_slices: int, known: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """Where a compute instance of ``ci_slices`` can sit in a GI of ``gi_slices``.

    The driver's list (nvmlGpuInstanceGetComputeInstancePossiblePlacements) when known;
    otherwise the rule every real ``nvidia-smi mig -lci`` output follows: starts at
    multiples of the CI size, and the full-size CI at 0.
    """
    if known:
        return [tuple(p) for p in known]
    if ci_slices >= gi_slices:
        return [(0, gi_slices)]
    return [(s, ci_slices) for s in range(0, gi_slices - ci_slices + 1, ci_slices)]


def place_cis(gi_slices: int, sizes: list[int], taken: list[tuple[int, int]] | None = None,
              known: dict[int, list[tuple[int, int]]] | None = None) -> list[tuple[int, int]] | None:
    """Placements for compute instances of the given sizes beside ``taken`` ones, or None."""
    taken = list(taken or [])
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    result: list[tuple[int, int] | None] = [None] * len(sizes)

    def search(k: int) -> bool:
        if k == len(order):
            return True
        i = order[k]
        for pl in ci_placements(gi_slices, sizes[i], (known or {}).get(sizes[i])):
            if pl[0] + pl[1] > gi_slices or any(_overlaps(pl, t) for t in taken):
                continue
            taken.append(pl)
            result[i] = pl
            if search(k + 1):
                return True
            taken.pop()
        return False

    return result if search(0) else None  # type: ignore[return-value]


def _blocking(profiles: list[dict], occupied: list[tuple[int, int]], pl: tuple[int, int]) -> int:
    """How many still-free placements of any profile ``pl`` would take away."""
    return sum(1 for p in profiles for q in p["placements"]
               if _overlaps(tuple(q), pl) and not any(_overlaps(tuple(q), o) for o in occupied))


def place_gis(profiles: list[dict], specs: list[dict], occupied: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Explicit placements for new GPU instances around ``occupied`` ones, or None.

    Largest first; each tries the placements that block the fewest other free
    placements first, so the free space left behind stays as usable as possible.
    """
    by_id = {p["id"]: p for p in profiles}
    order = sorted(range(len(specs)), key=lambda i: (-by_id[specs[i]["profile_id"]]["slices"],
                                                     len(by_id[specs[i]["profile_id"]]["placements"])))
    taken = list(occupied)
    result: list[tuple[int, int] | None] = [None] * len(specs)
    seen_fail: set = set()

    def search(k: int) -> bool:
        if k == len(order):
            return True
        key = (k, tuple(sorted(taken)))
        if key in seen_fail:
            return False
        prof = by_id[specs[order[k]]["profile_id"]]
        options = [tuple(pl) for pl in prof["placements"] if not any(_overlaps(tuple(pl), t) for t in taken)]
        options.sort(key=lambda pl: (_blocking(profiles, taken, pl), pl[0]))
        for pl in options:
            taken.append(pl)
            result[order[k]] = pl
            if search(k + 1):
                return True
            taken.pop()
        seen_fail.add(key)
        return False

    return result if search(0) else None  # type: ignore[return-value]


# --------------------------------------------------------------------------- layouts

def layout_from_mig_devices(profiles: list[dict], mig_devices: dict, model: str = "this GPU",
                            notes: list[str] | None = None) -> list[dict]:
    """mig-parted's ``mig-devices`` (MIG device name -> count) as GI specs.

    Like mig-parted, compute instances of the same GPU instance profile share a GPU
    instance while they fit in it (``1c.3g.40gb: 3`` is one 3g.40gb with three 1c
    compute instances); whole-GI devices (``3g.40gb: 2``) get a GPU instance each.
    """
    wanted: dict[int, list[int]] = {}
    for name, count in (mig_devices or {}).items():
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise MigError(f"mig-devices: the count for '{name}' must be a whole number >= 0, not {count!r}")
        profile, ci_slices = resolve_gi_profile(profiles, str(name), model, notes)
        wanted.setdefault(profile["id"], []).extend([ci_slices] * count)
    specs = []
    for profile_id, sizes in sorted(wanted.items()):
        gi_slices = next(p["slices"] for p in profiles if p["id"] == profile_id)
        open_gis: list[list[int]] = []
        for size in sorted(sizes, reverse=True):
            for group in open_gis:
                if sum(group) + size <= gi_slices and place_cis(gi_slices, group + [size]) is not None:
                    group.append(size)
                    break
            else:
                open_gis.append([size])
        specs.extend({"profile_id": profile_id, "cis": sorted(group, reverse=True)} for group in open_gis)
    return specs


def describe_specs(profiles: list[dict], specs: list[dict]) -> str:
    by_id = {p["id"]: p for p in profiles}
    counts = Counter(device_name(by_id[s["profile_id"]], c) for s in specs for c in s["cis"])
    return ", ".join(f"{n} x{k}" if k > 1 else n for n, k in sorted(counts.items())) or "no instances"


ENGINES = {"decoders": "video decoders", "encoders": "video encoders", "jpegs": "JPEG decoders",
           "ofas": "optical flow accelerators"}


def engine_excess(profiles: list[dict], specs: list[dict]) -> str | None:
    """Media engines the layout needs beyond the GPU's, or None.

    The GPU's engines are those of its full-GPU profile (the one with every compute
    slice); each GPU instance takes its profile's.  An A30 has one OFA and one JPEG
    decoder, so only one of its "+me" instances fits at a time.
    """
    by_id = {p["id"]: p for p in profiles}
    full = [p for p in profiles if p["slices"] == total_slices(profiles)]
    if not full:
        return None
    for engine, words in ENGINES.items():
        have = full[0].get(engine)
        need = sum(by_id[s["profile_id"]].get(engine) or 0 for s in specs)
        if have is not None and need > have:
            users = sorted({by_id[s["profile_id"]]["name"] for s in specs if by_id[s["profile_id"]].get(engine)})
            return f"needs {need} {words} ({', '.join(users)}), the GPU has {have}"
    return None


def _fits(profiles: list[dict], specs: list[dict]) -> bool:
    by_id = {p["id"]: p for p in profiles}
    counts = Counter(s["profile_id"] for s in specs)
    if any(counts[i] > by_id[i]["instance_count"] for i in counts):
        return False
    if engine_excess(profiles, specs):
        return False
    return place_gis(profiles, specs, []) is not None


def total_slices(profiles: list[dict]) -> int:
    """Compute slices of the GPU: carried by the profiles list when read from the driver."""
    return max([p.get("gpu_slices", 0) for p in profiles] + [p["slices"] for p in profiles] + [0])


def check_feasible(profiles: list[dict], specs: list[dict], model: str) -> None:
    """Reject an impossible layout before anything changes, saying why and what would fit."""
    by_id = {p["id"]: p for p in profiles}
    for profile_id, n in Counter(s["profile_id"] for s in specs).items():
        prof = by_id[profile_id]
        if n > prof["instance_count"]:
            raise MigError(f"{model} can hold at most {prof['instance_count']} x {prof['name']}, not {n}"
                           + _suggest(profiles, specs))
    total = total_slices(profiles)
    needed = sum(by_id[s["profile_id"]]["slices"] for s in specs)
    if needed > total:
        raise MigError(f"layout '{describe_specs(profiles, specs)}' needs {needed} compute slices, {model} has {total}"
                       + _suggest(profiles, specs))
    excess = engine_excess(profiles, specs)
    if excess:
        raise MigError(f"layout '{describe_specs(profiles, specs)}' {excess} on {model}" + _suggest(profiles, specs))
    if not _fits(profiles, specs):
        where = "; ".join(f"{by_id[i]['name']} only at " + ",".join(f"{a}:{b}" for a, b in by_id[i]["placements"])
                          for i in sorted({s["profile_id"] for s in specs}))
        raise MigError(f"layout '{describe_specs(profiles, specs)}' uses {needed} of {total} compute slices but no "
                       f"arrangement of placements fits on {model} ({where})" + _suggest(profiles, specs))


def _suggest(profiles: list[dict], specs: list[dict], budget: int = 400) -> str:
    """Nearby valid layouts: the target with the fewest GPU instances removed.

    Works on distinct GPU instances and their counts (removing one of two identical instances is
    one candidate, not two), fewest removals first, and tries at most ``budget`` candidates, so a
    request of dozens of instances is answered at once.
    """
    classes = Counter((s["profile_id"], tuple(s["cis"])) for s in specs)
    kinds = sorted(classes)
    found: list[str] = []
    tried = 0
    for drop in range(1, len(specs)):
        for removal in _removals([classes[k] for k in kinds], drop):
            tried += 1
            if tried > budget:
                break
            rest = [{"profile_id": k[0], "cis": list(k[1])} for k, n in zip(kinds, removal)
                    for _copy in range(classes[k] - n)]
            text = describe_specs(profiles, rest)
            if text not in found and _fits(profiles, rest):
                found.append(text)
            if len(found) >= 3:
                break
        if found or tried > budget:
            break
    return ("; valid layouts close to it: " + " | ".join(found)) if found else ""


def _removals(counts: list[int], total: int):
    """Ways to remove ``total`` instances from classes holding ``counts`` (a count per class)."""
    if not counts:
        if total == 0:
            yield []
        return
    for take in range(min(counts[0], total), -1, -1):
        for rest in _removals(counts[1:], total - take):
            yield [take] + rest


# --------------------------------------------------------------------------- planning

def device_counts(current: list[dict]) -> Counter:
    """(GI profile id, CI slices) -> how many MIG devices (what mig-parted compares)."""
    return Counter((gi["profile_id"], ci["slices"]) for gi in current for ci in gi["compute_instances"])


def spec_counts(specs: list[dict]) -> Counter:
    return Counter((s["profile_id"], c) for s in specs for c in s["cis"])


def matches(current: list[dict], specs: list[dict]) -> bool:
    """The GPU already holds the layout: same MIG devices, and no GPU instance without any."""
    return device_counts(current) == spec_counts(specs) and all(gi["compute_instances"] for gi in current)


def _ci_edit(gi: dict, spec: dict, gi_slices: int) -> tuple[list[dict], list[dict], list[int]] | None:
    """Keep what of a GI's compute instances the spec wants: (kept, destroyed, sizes to create).

    Keeps the largest set of existing compute instances (busy ones first) whose sizes the spec
    wants and around which the spec's other compute instances can still be placed; None when
    the spec's compute instances do not fit the GI at all.
    """
    cis = list(gi["compute_instances"])
    best: tuple | None = None
    for mask in range(1 << len(cis)):
        kept = [ci for n, ci in enumerate(cis) if mask >> n & 1]
        want = Counter(spec["cis"])
        want.subtract(ci["slices"] for ci in kept)
        if any(count < 0 for count in want.values()):
            continue
        new = sorted(want.elements(), reverse=True)
        if new and place_cis(gi_slices, new, [(c["start"], c["size"]) for c in kept]) is None:
            continue
        score = (sum(1 for c in kept if c.get("processes")), len(kept), -mask)
        if best is None or score > best[0]:
            best = (score, kept, new)
    if best is None:
        return None
    _score, kept, new = best
    return kept, [ci for ci in cis if ci not in kept], new


def plan_layout(profiles: list[dict], current: list[dict], specs: list[dict], model: str = "this GPU") -> dict:
    """Minimal-disruption plan from ``current`` GPU instances to the layout ``specs``.

    ``current`` GIs: {id, profile_id, start, size, compute_instances: [{id, slices, start,
    size, mig_uuid, processes}]}.  Returns {"keep": [...], "destroy_gis": [...], "destroy_cis":
    [...], "create": [...], "cost": (busy instances destroyed, instances destroyed)}.

    Exhaustive branch and bound over which existing GPU instances to keep (and as which
    target GI), so the instances destroyed are the fewest possible; instances with
    running processes weigh more than any number of idle ones.  New GPU instances get
    explicit placements around the kept ones.
    """
    check_feasible(profiles, specs, model)
    by_id = {p["id"]: p for p in profiles}
    classes: dict[tuple, int] = Counter((s["profile_id"], tuple(s["cis"])) for s in specs)
    class_list = list(classes)
    best: dict = {"cost": None}
    gis = sorted(current, key=lambda g: (-len(g["compute_instances"]), g["id"]))

    def gi_cost(gi: dict) -> tuple[int, int]:
        busy = sum(1 for c in gi["compute_instances"] if c.get("processes"))
        return busy, 1 + len(gi["compute_instances"])

    def finish(assign: list, cost: tuple[int, int], ci_edits: list) -> None:
        remaining = Counter(classes)
        for _gi, cls in assign:
            remaining[cls] -= 1
        new_specs = [{"profile_id": c[0], "cis": list(c[1])} for c in class_list for _copy in range(remaining[c])]
        occupied = [(pair[0]["start"], pair[0]["size"]) for pair in assign]
        placements = place_gis(profiles, new_specs, occupied)
        if placements is None:
            return
        if best["cost"] is None or cost < best["cost"]:
            best.update(cost=cost, assign=list(assign), edits=list(ci_edits), new=new_specs, placements=placements)

    def search(k: int, assign: list, used: Counter, cost: tuple[int, int], ci_edits: list) -> None:
        if best["cost"] is not None and cost >= best["cost"]:
            return
        if k == len(gis):
            finish(assign, cost, ci_edits)
            return
        gi = gis[k]
        for cls in class_list:
            if cls[0] != gi["profile_id"] or used[cls] >= classes[cls]:
                continue
            edit = _ci_edit(gi, {"profile_id": cls[0], "cis": list(cls[1])}, by_id[cls[0]]["slices"])
            if edit is None:
                continue
            destroyed = edit[1]
            extra = (sum(1 for c in destroyed if c.get("processes")), len(destroyed))
            used[cls] += 1
            assign.append((gi, cls))
            ci_edits.append(edit)
            search(k + 1, assign, used, (cost[0] + extra[0], cost[1] + extra[1]), ci_edits)
            ci_edits.pop()
            assign.pop()
            used[cls] -= 1
        gone = gi_cost(gi)
        search(k + 1, assign, used, (cost[0] + gone[0], cost[1] + gone[1]), ci_edits)

    search(0, [], Counter(), (0, 0), [])
    if best["cost"] is None:  # cannot happen after check_feasible: destroying everything always fits
        raise MigError(f"no plan reaches layout '{describe_specs(profiles, specs)}' on {model}")
    kept_ids = {gi["id"] for gi, _cls in best["assign"]}
    plan = {"keep": [], "destroy_gis": [], "destroy_cis": [], "create": [], "cost": best["cost"]}
    for (gi, _cls), (kept, destroyed, new) in zip(best["assign"], best["edits"]):
        plan["keep"].append({"gi": gi, "kept_cis": kept, "new_cis": new})
        plan["destroy_cis"].extend({"gi": gi, "ci": ci} for ci in destroyed)
    for gi in current:
        if gi["id"] not in kept_ids:
            plan["destroy_cis"].extend({"gi": gi, "ci": ci} for ci in gi["compute_instances"])
            plan["destroy_gis"].append(gi)
    for spec, placement in zip(best["new"], best["placements"]):
        plan["create"].append({"profile_id": spec["profile_id"], "profile": by_id[spec["profile_id"]]["name"],
                               "start": placement[0], "size": placement[1], "cis": list(spec["cis"])})
    return plan


def plan_is_empty(plan: dict) -> bool:
    return not (plan["destroy_gis"] or plan["destroy_cis"] or plan["create"]
                or any(k["new_cis"] for k in plan["keep"]))


def minimum_destroyed(profiles: list[dict], current: list[dict], specs: list[dict]) -> int:
    """Instances (GPU + compute) the optimal plan destroys; for tests and benchmarks."""
    if matches(current, specs):
        return 0
    return plan_layout(profiles, current, specs)["cost"][1]


def render_layout(profiles: list[dict], current: list[dict]) -> list[str]:
    """One line per GPU instance, for diffs and messages."""
    by_id = {p["id"]: p for p in profiles}
    lines = []
    for gi in sorted(current, key=lambda g: (g["start"], g["id"])):
        name = by_id[gi["profile_id"]]["name"] if gi["profile_id"] in by_id else str(gi["profile_id"])
        cis = ", ".join(device_name(by_id.get(gi["profile_id"], {"name": name, "slices": 0}), c["slices"])
                        + (f" {c['mig_uuid']}" if c.get("mig_uuid") else "") for c in gi["compute_instances"])
        lines.append(f"{name} at {gi['start']}:{gi['size']}: [{cis or 'no compute instance'}]")
    return lines
