"""Twilio REST emulator: the Calls resource and the account probe (PROTOCOLS.md §4).

Routes (all under `/2010-04-01/Accounts/{AccountSid}`):
- `GET .json`: the account (an auth probe).
- `POST /Calls.json`: create (form fields To, From, Twiml or Url, StatusCallback, ...) -> 201.
- `GET /Calls.json`: list.  `GET|POST /Calls/{CallSid}.json`: fetch / update (Twiml, Url, Status).

Auth is HTTP Basic `AccountSid:AuthToken`. Errors use Twilio's body shape
`{"code", "message", "more_info", "status"}`, which the SDK turns into `TwilioRestException`.
Calls live in memory and change status only when updated (no ringing simulation).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from email.utils import formatdate
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from emulators.common import EmulatorState, now, state_of

API = "/2010-04-01"
_END_STATUSES = {"completed", "canceled"}


def _json(status: int, body: Any) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error(status: int, code: int, message: str) -> Response:
    return _json(status, {"code": code, "message": message,
                          "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status})


def _basic_auth(request: Request) -> tuple[str, str] | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(value.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


async def _begin(request: Request) -> tuple[EmulatorState, dict[str, Any], dict[str, str], Response | None]:
    """Record the request, parse the form, check auth and the fault switch."""
    state = state_of(request.scope)
    tw = state.config.twilio
    form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    record = state.log.add("twilio", {
        "t": now(), "method": request.method, "path": request.url.path, "query": dict(request.query_params),
        "form": form, "auth": False, "status": None, "fault": None, "call_sid": None,
    })
    creds = _basic_auth(request)
    ok = creds is not None and bool(creds[1]) and (not tw.auth_token or creds[1] == tw.auth_token) and (
        creds[0] == tw.account_sid if tw.account_sid else creds[0].startswith(("AC", "SK")))
    record["auth"] = ok
    if not ok:
        return state, record, form, _error(401, 20003, "Authenticate")
    account = request.path_params.get("account_sid", "")
    if tw.account_sid and account != tw.account_sid:
        return state, record, form, _error(404, 20404, f"The requested resource {request.url.path} was not found")
    fault = record["fault"] = tw.take_fault()
    if fault == "error500":
        return state, record, form, _error(500, 20500, "Internal Server Error")
    return state, record, form, None


def _done(record: dict[str, Any], response: Response) -> Response:
    record["status"] = response.status_code
    return response


def _call_json(call: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in call.items() if not k.startswith("_")}


def _new_call(account: str, form: dict[str, str]) -> dict[str, Any]:
    sid = "CA" + uuid.uuid4().hex
    stamp = formatdate(usegmt=False).replace("-0000", "+0000")
    uri = f"{API}/Accounts/{account}/Calls/{sid}.json"
    return {
        "sid": sid, "date_created": stamp, "date_updated": stamp, "parent_call_sid": None,
        "account_sid": account, "to": form.get("To"), "to_formatted": form.get("To"), "from": form.get("From"),
        "from_formatted": form.get("From"), "phone_number_sid": "PN" + uuid.uuid4().hex, "status": "queued",
        "start_time": None, "end_time": None, "duration": None, "price": None, "price_unit": "USD",
        "direction": "outbound-api", "answered_by": None, "annotation": None, "api_version": "2010-04-01",
        "forwarded_from": None, "group_sid": None, "caller_name": None, "queue_time": "0", "trunk_sid": None,
        "uri": uri, "subresource_uris": {
            "notifications": uri.replace(".json", "/Notifications.json"),
            "recordings": uri.replace(".json", "/Recordings.json"),
            "streams": uri.replace(".json", "/Streams.json"),
            "events": uri.replace(".json", "/Events.json"),
        },
        # Not part of Twilio's resource (hidden by the leading underscore): what the caller asked for.
        "_twiml": form.get("Twiml"), "_url": form.get("Url"), "_status_callback": form.get("StatusCallback"),
    }


async def account(request: Request) -> Response:
    state, record, _, error = await _begin(request)
    if error is not None:
        return _done(record, error)
    sid = request.path_params["account_sid"]
    uri = f"{API}/Accounts/{sid}.json"
    return _done(record, _json(200, {
        "sid": sid, "owner_account_sid": sid, "friendly_name": "voicegate emulator", "status": "active",
        "type": "Full", "auth_token": "<redacted>", "date_created": formatdate(usegmt=True),
        "date_updated": formatdate(usegmt=True), "uri": uri,
        "subresource_uris": {"calls": uri.replace(".json", "/Calls.json")},
    }))


async def calls(request: Request) -> Response:
    state, record, form, error = await _begin(request)
    if error is not None:
        return _done(record, error)
    sid = request.path_params["account_sid"]
    if request.method == "GET":
        mine = [_call_json(c) for c in state.twilio_calls.values() if c["account_sid"] == sid]
        uri = f"{API}/Accounts/{sid}/Calls.json?PageSize=50&Page=0"
        return _done(record, _json(200, {
            "calls": mine, "end": max(len(mine) - 1, 0), "first_page_uri": uri, "next_page_uri": None,
            "page": 0, "page_size": 50, "previous_page_uri": None, "start": 0, "uri": uri,
        }))
    missing = [f for f in ("To", "From") if not form.get(f)]
    if missing:
        return _done(record, _error(400, 21201, f"No '{missing[0]}' number is specified"))
    if not (form.get("Twiml") or form.get("Url") or form.get("ApplicationSid")):
        return _done(record, _error(400, 21205, "Url parameter is required."))
    call = _new_call(sid, form)
    state.twilio_calls[call["sid"]] = call
    record["call_sid"] = call["sid"]
    return _done(record, _json(201, _call_json(call)))


async def call(request: Request) -> Response:
    state, record, form, error = await _begin(request)
    if error is not None:
        return _done(record, error)
    call_sid = request.path_params["call_sid"]
    record["call_sid"] = call_sid
    found = state.twilio_calls.get(call_sid)
    if found is None or found["account_sid"] != request.path_params["account_sid"]:
        return _done(record, _error(404, 20404, f"The requested resource {request.url.path} was not found"))
    if request.method == "POST":
        status = form.get("Status")
        if status is not None and status not in _END_STATUSES:
            return _done(record, _error(400, 21220, f"Invalid call state: {status}"))
        if found["status"] in _END_STATUSES and (status or form.get("Twiml") or form.get("Url")):
            return _done(record, _error(400, 21220, "Call is not in-progress. Cannot redirect."))
        if status is not None:
            found["status"] = status
            found["end_time"] = formatdate(usegmt=False).replace("-0000", "+0000")
        if form.get("Twiml") is not None:
            found["_twiml"] = form["Twiml"]
        if form.get("Url") is not None:
            found["_url"] = form["Url"]
        found["date_updated"] = formatdate(usegmt=False).replace("-0000", "+0000")
    return _done(record, _json(200, _call_json(found)))
