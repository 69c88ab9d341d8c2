"""What a refused request says, in French then English (the users are French hospital staff).

One entry per reason; the reason's key goes into the audit trail.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

TEXTS: dict[str, tuple[str, str]] = {
    "raw-data": (
        "Les données brutes du projet ne quittent pas le conteneur : seule la liste des "
        "fichiers est visible. Analysez-les dans un notebook ; les résultats sortent par le sas.",
        "The project's raw data never leaves the container: only the file names are visible. "
        "Analyse them in a notebook; results leave through the airlock.",
    ),
    "raw-data-copy": (
        "Ce fichier est une copie exacte d'un jeu de données brutes ({name}) : il est traité "
        "comme les données brutes.",
        "This file is an exact copy of a raw dataset ({name}): it is treated as raw data.",
    ),
    "download": (
        "Le téléchargement et l'export de fichiers sont désactivés : les résultats sortent par "
        "le sas, après revue.",
        "Downloads and exports are disabled: results leave through the airlock, after review.",
    ),
    "read-too-large": (
        "Ce fichier ({size}) dépasse la taille que le navigateur peut ouvrir ({limit}) ; "
        "ouvrez-le dans un notebook.",
        "This file ({size}) is larger than the browser may open ({limit}); open it in a notebook.",
    ),
    "upload-too-large": (
        "Envoi refusé : {size} dépasse la limite de {limit} par fichier.",
        "Upload refused: {size} is over the limit of {limit} per file.",
    ),
    "upload-type": (
        "Envoi refusé : les fichiers « {ext} » ne sont pas acceptés (acceptés : {allowed}).",
        "Upload refused: '{ext}' files are not accepted (accepted: {allowed}).",
    ),
    "notebook-too-large": (
        "Enregistrement refusé : ce notebook ({size}) dépasse {limit}. Effacez les grandes "
        "sorties (Édition › Effacer les sorties) puis enregistrez.",
        "Save refused: this notebook ({size}) is over {limit}. Clear large outputs "
        "(Edit › Clear Outputs) and save again.",
    ),
    "write-raw-data": (
        "Les données brutes sont en lecture seule ; elles sont importées par l'administrateur.",
        "Raw data is read-only; the administrator imports it.",
    ),
    "dashboard-only": (
        "Ce serveur ne sert que les tableaux de bord du projet.",
        "This server only serves the project's dashboards.",
    ),
    "output-cut": (
        "Sortie coupée : {size} dépasse la limite de {limit} par sortie. Affichez un résumé "
        "(df.head(), des agrégats) plutôt que la table entière.",
        "Output cut: {size} is over the limit of {limit} per output. Show a summary "
        "(df.head(), aggregates) rather than the whole table.",
    ),
    "output-rate": (
        "Sorties suspendues : le noyau envoie plus de {limit} par seconde.",
        "Outputs paused: the kernel sends more than {limit} per second.",
    ),
    "terminal-output-cut": (
        "Sortie du terminal coupée : {size} dépasse la limite de {limit} par envoi. Affichez "
        "un extrait (head, wc -l) plutôt que le fichier entier.",
        "Terminal output cut: {size} is over the limit of {limit} per message. Show an "
        "extract (head, wc -l) rather than the whole file.",
    ),
    "terminal-output-rate": (
        "Sortie du terminal suspendue : plus de {limit} par seconde. Affichez un extrait "
        "(head, wc -l) plutôt que le fichier entier.",
        "Terminal output paused: more than {limit} per second. Show an extract (head, wc -l) "
        "rather than the whole file.",
    ),
    "storage-full": (
        "Quota de stockage du projet atteint : {used} utilisés sur {limit} (offre {tier}). "
        "Rien n'a été écrit ; libérez de la place dans work/ ou outputs/ puis réessayez.",
        "The project's storage quota is reached: {used} used of {limit} ({tier} tier). "
        "Nothing was written; free space in work/ or outputs/ and try again.",
    ),
    "storage-full-kernel": (
        "Quota de stockage du projet dépassé ({used} sur {limit}, offre {tier}) : aucun "
        "nouveau noyau ne démarre tant que de la place n'est pas libérée.",
        "The project's storage quota is exceeded ({used} of {limit}, {tier} tier): no new "
        "kernel starts until space is freed.",
    ),
    "storage-warning": (
        "Le stockage du projet est utilisé à {percent} % ({used} sur {limit}, offre {tier}).",
        "The project's storage is {percent} % used ({used} of {limit}, {tier} tier).",
    ),
    "too-many-kernels": (
        "Ce serveur a déjà {count} noyaux, le maximum de l'offre {tier} : arrêtez un noyau "
        "(Kernel › Shut Down Kernel) avant d'en démarrer un autre.",
        "This server already has {count} kernels, the most the {tier} tier allows: shut one "
        "down (Kernel › Shut Down Kernel) before starting another.",
    ),
    "kernel-memory": (
        "Le noyau a été arrêté : il dépassait la mémoire de l'offre {tier} ({limit}). Les "
        "fichiers enregistrés sont intacts ; travaillez sur un extrait ou par morceaux.",
        "The kernel was stopped: it went over the {tier} tier's memory ({limit}). Saved files "
        "are intact; work on a sample or in chunks.",
    ),
}


@dataclass(frozen=True)
class Refusal:
    reason: str
    fr: str
    en: str

    @property
    def text(self) -> str:
        return f"{self.fr} / {self.en}"


def refusal(reason: str, **values) -> Refusal:
    fr, en = TEXTS[reason]
    return Refusal(reason, fr.format(**values), en.format(**values))


def human_size(size: int) -> str:
    for unit, factor in (("Gio", 1024**3), ("Mio", 1024**2), ("Kio", 1024)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} o"


#: The refusal of the request being handled, for the audit trail (set in the request's task).
current_refusal: contextvars.ContextVar[Refusal | None] = contextvars.ContextVar(
    "hdshub_refusal", default=None)
