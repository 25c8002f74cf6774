"""The few strings a researcher reads, in English, German, French and Spanish.

The language comes from the browser's ``Accept-Language`` and is passed on to ORCID as
``lang`` so both pages speak the same language.
"""
from __future__ import annotations

import re

DEFAULT = "en"
MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "interstitial.title": "Connect your ORCID iD",
        "interstitial.lead": "{service} would like your ORCID iD, the persistent identifier that distinguishes you from every other researcher.",
        "interstitial.why": "{institution} collects your ORCID iD once, directly from ORCID, and passes it on to the services you sign in to, so you never have to type it again.",
        "interstitial.what": "ORCID will ask you to sign in (or register) and to grant {institution} permission to read your ORCID iD. You can revoke it at any time in your ORCID account settings.",
        "interstitial.required": "This service requires your ORCID iD. Without it you cannot sign in to it.",
        "interstitial.connect": "Connect your ORCID iD",
        "interstitial.not_now": "Not now",
        "interstitial.never": "Don't ask again",
        "interstitial.cancel": "Cancel sign-in",
        "interstitial.you": "Signed in as {user}",
        "connect.done.title": "Your ORCID iD is connected",
        "connect.done.body": "{institution} will now pass your ORCID iD to the services you sign in to.",
        "connect.done.account": "Institutional account",
        "connect.done.record": "ORCID record",
        "connect.pending.title": "Almost done",
        "connect.pending.body": "Sign in to any service through {institution} in this browser to finish connecting your ORCID iD.",
        "connect.confirm.title": "Connect this ORCID iD to your account?",
        "connect.confirm.body": "ORCID says the following iD belongs to you. Connect it to your institutional account {user}?",
        "connect.confirm.yes": "Yes, connect it",
        "connect.confirm.no": "No, this is not mine",
        "connect.confirm.started": "Connection started at ORCID",
        "connect.confirm.origin": "Started from network address",
        "error.reference": "Reference",
    },
    "de": {
        "interstitial.title": "Verbinden Sie Ihre ORCID iD",
        "interstitial.lead": "{service} möchte Ihre ORCID iD erhalten, die dauerhafte Kennung, die Sie von allen anderen Forschenden unterscheidet.",
        "interstitial.why": "{institution} holt Ihre ORCID iD einmal direkt bei ORCID ab und gibt sie an die Dienste weiter, bei denen Sie sich anmelden, damit Sie sie nie wieder eintippen müssen.",
        "interstitial.what": "ORCID bittet Sie, sich anzumelden (oder zu registrieren) und {institution} zu erlauben, Ihre ORCID iD zu lesen. Sie können das jederzeit in Ihren ORCID-Kontoeinstellungen widerrufen.",
        "interstitial.required": "Dieser Dienst erfordert Ihre ORCID iD. Ohne sie können Sie sich nicht anmelden.",
        "interstitial.connect": "ORCID iD verbinden",
        "interstitial.not_now": "Jetzt nicht",
        "interstitial.never": "Nicht mehr fragen",
        "interstitial.cancel": "Anmeldung abbrechen",
        "interstitial.you": "Angemeldet als {user}",
        "connect.done.title": "Ihre ORCID iD ist verbunden",
        "connect.done.body": "{institution} gibt Ihre ORCID iD nun an die Dienste weiter, bei denen Sie sich anmelden.",
        "connect.done.account": "Institutionelles Konto",
        "connect.done.record": "ORCID-Datensatz",
        "connect.pending.title": "Fast geschafft",
        "connect.pending.body": "Melden Sie sich in diesem Browser über {institution} bei einem Dienst an, um die Verbindung abzuschließen.",
        "connect.confirm.title": "Diese ORCID iD mit Ihrem Konto verbinden?",
        "connect.confirm.body": "Laut ORCID gehört Ihnen die folgende iD. Mit Ihrem Konto {user} verbinden?",
        "connect.confirm.yes": "Ja, verbinden",
        "connect.confirm.no": "Nein, das ist nicht meine",
        "connect.confirm.started": "Verbindung bei ORCID begonnen",
        "connect.confirm.origin": "Begonnen von Netzwerkadresse",
        "error.reference": "Referenz",
    },
    "fr": {
        "interstitial.title": "Associez votre identifiant ORCID",
        "interstitial.lead": "{service} souhaite connaître votre identifiant ORCID, l'identifiant pérenne qui vous distingue de tout autre chercheur.",
        "interstitial.why": "{institution} obtient votre identifiant ORCID une seule fois, directement auprès d'ORCID, et le transmet aux services auxquels vous vous connectez : vous n'aurez plus à le saisir.",
        "interstitial.what": "ORCID vous demandera de vous connecter (ou de vous inscrire) et d'autoriser {institution} à lire votre identifiant ORCID. Vous pouvez retirer cette autorisation à tout moment dans les paramètres de votre compte ORCID.",
        "interstitial.required": "Ce service exige votre identifiant ORCID. Sans lui, vous ne pouvez pas vous y connecter.",
        "interstitial.connect": "Associer mon identifiant ORCID",
        "interstitial.not_now": "Pas maintenant",
        "interstitial.never": "Ne plus me demander",
        "interstitial.cancel": "Annuler la connexion",
        "interstitial.you": "Connecté en tant que {user}",
        "connect.done.title": "Votre identifiant ORCID est associé",
        "connect.done.body": "{institution} transmettra désormais votre identifiant ORCID aux services auxquels vous vous connectez.",
        "connect.done.account": "Compte institutionnel",
        "connect.done.record": "Dossier ORCID",
        "connect.pending.title": "Presque terminé",
        "connect.pending.body": "Connectez-vous à un service via {institution} dans ce navigateur pour terminer l'association.",
        "connect.confirm.title": "Associer cet identifiant ORCID à votre compte ?",
        "connect.confirm.body": "Selon ORCID, l'identifiant suivant vous appartient. L'associer à votre compte {user} ?",
        "connect.confirm.yes": "Oui, l'associer",
        "connect.confirm.no": "Non, ce n'est pas le mien",
        "connect.confirm.started": "Association commencée chez ORCID",
        "connect.confirm.origin": "Commencée depuis l'adresse réseau",
        "error.reference": "Référence",
    },
    "es": {
        "interstitial.title": "Conecte su iD de ORCID",
        "interstitial.lead": "{service} quiere su iD de ORCID, el identificador persistente que le distingue de cualquier otro investigador.",
        "interstitial.why": "{institution} obtiene su iD de ORCID una sola vez, directamente de ORCID, y lo transmite a los servicios en los que inicia sesión, para que nunca tenga que escribirlo.",
        "interstitial.what": "ORCID le pedirá que inicie sesión (o se registre) y que autorice a {institution} a leer su iD de ORCID. Puede revocarlo en cualquier momento en la configuración de su cuenta ORCID.",
        "interstitial.required": "Este servicio requiere su iD de ORCID. Sin él no puede iniciar sesión.",
        "interstitial.connect": "Conectar mi iD de ORCID",
        "interstitial.not_now": "Ahora no",
        "interstitial.never": "No volver a preguntar",
        "interstitial.cancel": "Cancelar el inicio de sesión",
        "interstitial.you": "Sesión iniciada como {user}",
        "connect.done.title": "Su iD de ORCID está conectado",
        "connect.done.body": "{institution} transmitirá ahora su iD de ORCID a los servicios en los que inicie sesión.",
        "connect.done.account": "Cuenta institucional",
        "connect.done.record": "Registro ORCID",
        "connect.pending.title": "Casi listo",
        "connect.pending.body": "Inicie sesión en cualquier servicio a través de {institution} en este navegador para terminar la conexión.",
        "connect.confirm.title": "¿Conectar este iD de ORCID a su cuenta?",
        "connect.confirm.body": "Según ORCID, el siguiente iD le pertenece. ¿Conectarlo a su cuenta {user}?",
        "connect.confirm.yes": "Sí, conectarlo",
        "connect.confirm.no": "No, no es mío",
        "connect.confirm.started": "Conexión iniciada en ORCID",
        "connect.confirm.origin": "Iniciada desde la dirección de red",
        "error.reference": "Referencia",
    },
}
SUPPORTED = tuple(MESSAGES)
_TAG = re.compile(r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")


def negotiate(accept_language: str | None, supported: tuple[str, ...] = SUPPORTED) -> str:
    """Pick the best supported language from an Accept-Language header (RFC 9110 weights)."""
    best, best_q = DEFAULT, -1.0
    for i, part in enumerate((accept_language or "")[:512].split(",")):
        m = _TAG.match(part)
        if not m:
            continue
        lang = m.group(1).lower()
        q = float(m.group(2)) if m.group(2) else 1.0
        if lang in supported and q > 0 and q > best_q:
            best, best_q = lang, q
    return best


class Translator:
    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in MESSAGES else DEFAULT

    def __call__(self, key: str, **values: str) -> str:
        text = MESSAGES[self.lang].get(key) or MESSAGES[DEFAULT][key]
        return text.format(**values) if values else text
