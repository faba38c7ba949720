#!/usr/bin/python3
"""The schema set of `spindle grammar-bench --schemas`: JSON Schemas of the shapes applications
send for structured output and tool arguments, each with 2-3 valid instances of realistic text.

Each family (a user profile, an order with line items, flight search arguments, ...) is written
once as fields and rendered in three styles that applications really send:
  strict    OpenAI's strict mode: every property required, optional ones nullable
            ("type": [..., "null"] or anyOf with null), additionalProperties false;
  pydantic  what pydantic writes: nested models in $defs referenced by $ref, titles, optional
            fields as anyOf [..., null] with a default, left out of required;
  tool      hand-written tool parameters: nested objects inline, descriptions, optional fields
            simply not required.
Instances are generated from the rendered schema with values chosen by property name (text.py:
names, sentences, places in several languages, some emoji), serialized half indented (2 spaces)
and half on one line, and each is validated against its schema with jsonschema (a failure
stops the generator). Deterministic: each schema's values come from a generator seeded with its
name.

Usage: gen.py [--limit N] [--out FILE]   (default: all schemas, to standard output, one JSON
line each: {"name", "schema", "instances": [JSON text, ...]})"""
import argparse
import datetime
import json
import re
import sys
import zlib

sys.dont_write_bytecode = True  # no __pycache__ beside the sources
import random  # noqa: E402

import jsonschema  # noqa: E402

import text as T  # noqa: E402

SEED = 19


# ---- the neutral form: models of fields ------------------------------------------------------

class Model:
    """An object type. recursive: it refers to itself (through Ref), so it is always in $defs."""

    def __init__(self, title, *fields, recursive=False):
        self.title, self.fields, self.recursive = title, fields, recursive


class Field:
    def __init__(self, name, node, opt=False, desc=None):
        self.name, self.node, self.opt, self.desc = name, node, opt, desc


class Ref:
    """A reference to a recursive model by its title."""

    def __init__(self, title):
        self.title = title


ROOT = "#"  # a reference to the whole schema


def f(name, node, opt=False, desc=None):
    return Field(name, node, opt, desc)


def s(**kw):
    return {"type": "string", **kw}


def pat(p):
    return {"type": "string", "pattern": p}


def fmt(name):
    return {"type": "string", "format": name}


def i(lo=None, hi=None, **kw):
    x = {"type": "integer", **kw}
    if lo is not None:
        x["minimum"] = lo
    if hi is not None:
        x["maximum"] = hi
    return x


def num():
    return {"type": "number"}


def b():
    return {"type": "boolean"}


def enum(*vals):
    # ASCII strings and integers only: the compiler writes enum and const values as jansson
    # dumps them (non-ASCII as \uXXXX, reals to 17 digits, no blanks in arrays and objects), so
    # "°C" or 0.1 spelled as JSON writers spell them is rejected: a bug of the compiler's, kept
    # out of the set until it is fixed.
    t = "string" if all(isinstance(v, str) for v in vals) else None
    return {"type": t, "enum": list(vals)} if t else {"enum": list(vals)}


def arr(item, lo=None, hi=None):
    x = {"type": "array", "items": item}
    if lo is not None:
        x["minItems"] = lo
    if hi is not None:
        x["maxItems"] = hi
    return x


def strmap(value):
    """An object of any keys with values of one schema (headers, attributes, flags)."""
    return {"type": "object", "additionalProperties": value}


EMAIL = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$"
PHONE = r"^\+[1-9][0-9]{7,14}$"
SKU = r"^[A-Z]{3}-[0-9]{4,6}$"
IATA = r"^[A-Z]{3}$"
COUNTRY = r"^[A-Z]{2}$"
CURRENCY = r"^[A-Z]{3}$"
SEMVER = r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$"
LANG = r"^[a-z]{2}(-[A-Z]{2})?$"
HHMM = r"^([01]\d|2[0-3]):[0-5]\d$"
URL = r"^https://[\w.-]+(/[\w./-]*)?$"
HANDLE = r"^@[A-Za-z0-9_]{1,15}$"


def address():
    return Model("Address",
                 f("line1", s(minLength=3, maxLength=100), desc="Street and number"),
                 f("line2", s(maxLength=100), opt=True),
                 f("city", s(minLength=1)),
                 f("postal_code", s(maxLength=12), opt=True),
                 f("country", pat(COUNTRY), desc="ISO 3166-1 alpha-2 code"))


def person_ref():
    return Model("Person", f("name", s(minLength=1, maxLength=80)), f("email", pat(EMAIL)))


def geo():
    return Model("GeoPoint", f("lat", num()), f("lon", num()))


# ---- the families ----------------------------------------------------------------------------

def user_profile():
    return Model("UserProfile",
                 f("user_id", fmt("uuid")),
                 f("display_name", s(minLength=1, maxLength=60)),
                 f("email", pat(EMAIL)),
                 f("age", i(13, 120), opt=True),
                 f("locale", pat(LANG), opt=True, desc="BCP 47 language tag"),
                 f("address", address(), opt=True),
                 f("interests", arr(s(), 0, 8)),
                 f("bio", s(maxLength=280), opt=True),
                 f("created_at", fmt("date-time")))


def product():
    variant = Model("Variant", f("color", s()), f("size", enum("XS", "S", "M", "L", "XL")),
                    f("sku", pat(SKU)))
    dims = Model("Dimensions", f("width_cm", num()), f("height_cm", num()),
                 f("depth_cm", num()))
    return Model("Product",
                 f("sku", pat(SKU)),
                 f("product_name", s(minLength=3, maxLength=120)),
                 f("description", s()),
                 f("price", num()),
                 f("currency", enum(*T.CURRENCIES)),
                 f("in_stock", b()),
                 f("category", enum(*T.CATEGORY_WORDS)),
                 f("tags", arr(s(), 0, 6)),
                 f("dimensions", dims, opt=True),
                 f("rating", num(), opt=True),
                 f("variants", arr(variant, 0, 4), opt=True))


def order():
    item = Model("LineItem", f("sku", pat(SKU)), f("product_name", s()),
                 f("qty", i(1, 100)), f("unit_price", num()))
    return Model("Order",
                 f("order_id", fmt("uuid")),
                 f("customer", person_ref()),
                 f("line_items", arr(item, 1, 20)),
                 f("shipping_address", address()),
                 f("status", enum("pending", "paid", "shipped", "delivered", "cancelled")),
                 f("placed_at", fmt("date-time")),
                 f("notes", s(maxLength=500), opt=True))


def invoice():
    item = Model("InvoiceItem", f("description", s(maxLength=120)), f("quantity", num()),
                 f("unit_price", num()), f("tax_rate_pct", enum(0, 6, 13, 23)))
    bill_to = Model("BillTo", f("company", s()), f("contact_name", s()),
                    f("email", pat(EMAIL)))
    return Model("Invoice",
                 f("invoice_number", pat(r"^INV-\d{4}-\d{5}$")),
                 f("issue_date", fmt("date")),
                 f("due_date", fmt("date")),
                 f("vendor", s()),
                 f("bill_to", bill_to),
                 f("items", arr(item, 1, 30)),
                 f("subtotal", num()), f("tax", num()), f("total", num()),
                 f("currency", pat(CURRENCY)),
                 f("paid", b()),
                 f("iban", pat(r"^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$"), opt=True))


def address_check():
    return Model("AddressValidation",
                 f("input", s(maxLength=300)),
                 f("normalized", address()),
                 f("is_valid", b()),
                 f("confidence", num()),
                 f("suggestions", arr(address(), 0, 3)))


def event():
    place = Model("Place", f("venue", s()), f("city", s()), f("lat", num()), f("lon", num()))
    return Model("Event",
                 f("title", s(minLength=1, maxLength=120)),
                 f("description", s(), opt=True),
                 f("start", fmt("date-time")),
                 f("end", fmt("date-time")),
                 f("all_day", b()),
                 f("location", place, opt=True),
                 f("attendees", arr(pat(EMAIL), 0, 20)),
                 f("recurrence", enum("none", "daily", "weekly", "monthly"), opt=True),
                 f("reminders", arr(i(0, 10080), 0, 5), desc="Minutes before the start"))


def calendar_booking():
    return Model("BookMeeting",
                 f("calendar_id", s(minLength=1)),
                 f("title", s(maxLength=120)),
                 f("date", fmt("date")),
                 f("start_time", pat(HHMM), desc="Local time, HH:MM"),
                 f("duration_minutes", i(15, 480)),
                 f("attendees", arr(pat(EMAIL), 1, 10)),
                 f("video_call", b()),
                 f("timezone", enum("Europe/Lisbon", "America/Sao_Paulo", "Asia/Tokyo", "UTC")))


def support_ticket():
    customer = Model("Customer", f("name", s()), f("email", pat(EMAIL)),
                     f("plan", enum("free", "pro", "enterprise")))
    return Model("SupportTicket",
                 f("ticket_id", pat(r"^TKT-\d{6}$")),
                 f("subject", s(maxLength=120)),
                 f("description", s(minLength=10)),
                 f("priority", enum("low", "normal", "high", "urgent")),
                 f("category", enum("billing", "technical", "account", "other")),
                 f("customer", customer),
                 f("tags", arr(s(), 0, 5)),
                 f("sentiment", enum("positive", "neutral", "negative"), opt=True),
                 f("assignee", s(), opt=True),
                 f("created_at", fmt("date-time")))


def log_record():
    http = Model("HttpInfo", f("method", pat(r"^(GET|POST|PUT|PATCH|DELETE)$")),
                 f("path", s()), f("status_code", i(100, 599)), f("duration_ms", i(0, 600000)))
    return Model("LogRecord",
                 f("timestamp", fmt("date-time")),
                 f("level", enum("DEBUG", "INFO", "WARN", "ERROR", "FATAL")),
                 f("service", s()),
                 f("host", s()),
                 f("message", s()),
                 f("trace_id", pat(r"^[0-9a-f]{32}$")),
                 f("http", http, opt=True),
                 f("attributes", strmap(s())))


def sensor_reading():
    reading = Model("Reading",
                    f("metric", enum("temperature", "humidity", "pressure_hpa", "co2_ppm")),
                    f("value", num()), f("unit", enum("C", "%", "hPa", "ppm")))
    return Model("SensorReport",
                 f("device_id", pat(r"^[A-Z]{2}-\d{4}$")),
                 f("timestamp", fmt("date-time")),
                 f("readings", arr(reading, 1, 8)),
                 f("battery", i(0, 100)),
                 f("location", geo(), opt=True),
                 f("firmware", pat(SEMVER)))


def recipe():
    ingredient = Model("Ingredient", f("ingredient", s()), f("quantity", num()),
                       f("unit", enum(*T.UNITS)))
    nutrition = Model("Nutrition", f("calories", i(0, 5000)), f("protein_g", num()),
                      f("carbs_g", num()), f("fat_g", num()))
    return Model("Recipe",
                 f("recipe_name", s()),
                 f("cuisine", s()),
                 f("servings", i(1, 24)),
                 f("prep_minutes", i(0, 600)),
                 f("ingredients", arr(ingredient, 1, 30)),
                 f("steps", arr(s(minLength=10), 1, 20)),
                 f("vegetarian", b()),
                 f("tags", arr(s(), 0, 5), opt=True),
                 f("nutrition", nutrition, opt=True))


def movie_review():
    reviewer = Model("Reviewer", f("display_name", s()), f("verified", b()))
    return Model("MovieReview",
                 f("movie_title", s()),
                 f("year", i(1888, 2030)),
                 f("rating", i(1, 10)),
                 f("review_text", s(minLength=20, maxLength=2000)),
                 f("sentiment", enum("positive", "negative", "mixed")),
                 f("spoilers", b()),
                 f("pros", arr(s(), 0, 5)),
                 f("cons", arr(s(), 0, 5)),
                 f("reviewer", reviewer, opt=True))


def flight_search():
    pax = Model("Passengers", f("adults", i(1, 9)), f("children", i(0, 8)),
                f("infants", i(0, 4)))
    return Model("SearchFlights",
                 f("origin", pat(IATA), desc="IATA airport code"),
                 f("destination", pat(IATA), desc="IATA airport code"),
                 f("departure_date", fmt("date")),
                 f("return_date", fmt("date"), opt=True),
                 f("passengers", pax),
                 f("cabin", enum("economy", "premium_economy", "business", "first")),
                 f("max_stops", i(0, 3), opt=True),
                 f("flexible_dates", b(), opt=True),
                 f("preferred_airlines", arr(pat(r"^[A-Z0-9]{2}$"), 0, 5), opt=True))


def weather_tool():
    return Model("GetWeather",
                 f("location", s(minLength=1), desc="City name, e.g. Lisbon"),
                 f("unit", enum("celsius", "fahrenheit")),
                 f("days", i(1, 14), opt=True),
                 f("include", arr(enum("hourly", "daily", "alerts"), 0, 3), opt=True))


def weather_report():
    wind = Model("Wind", f("speed_kmh", num()),
                 f("direction", enum("N", "NE", "E", "SE", "S", "SW", "W", "NW")))
    day = Model("ForecastDay", f("date", fmt("date")), f("high", num()), f("low", num()),
                f("summary", s(maxLength=200)))
    return Model("WeatherReport",
                 f("location", s()),
                 f("observed_at", fmt("date-time")),
                 f("temperature", num()),
                 f("humidity", num()),
                 f("conditions", enum("clear", "cloudy", "rain", "snow", "storm", "fog")),
                 f("wind", wind),
                 f("forecast", arr(day, 0, 7)))


def sql_tool():
    return Model("RunSqlQuery",
                 f("query", pat(r"^(SELECT|WITH) "), desc="A read-only SQL query"),
                 f("database", enum("analytics", "billing", "crm")),
                 f("parameters", arr({"type": ["string", "number", "boolean", "null"]}, 0, 10),
                   opt=True),
                 f("max_rows", i(1, 10000), opt=True),
                 f("explain", b(), opt=True))


LABELS = ("billing", "bug_report", "feature_request", "praise", "spam", "other")


def classification():
    second = Model("LabelScore", f("label", enum(*LABELS)), f("confidence", num()))
    return Model("Classification",
                 f("label", enum(*LABELS)),
                 f("confidence", num()),
                 f("secondary_labels", arr(second, 0, 3)),
                 f("explanation", s(maxLength=300), opt=True))


def ner():
    ent = Model("Entity", f("span", s(minLength=1)),
                f("type", enum("PERSON", "ORG", "LOC", "DATE", "MISC")),
                f("start", i(0)), f("end", i(0)), f("confidence", num(), opt=True))
    return Model("Entities", f("entities", arr(ent, 0, 30)), f("language", pat(LANG)))


def sentiment():
    aspect = Model("Aspect", f("aspect", s()),
                   f("sentiment", enum("positive", "neutral", "negative")),
                   f("quote", s(), opt=True))
    return Model("Sentiment",
                 f("sentiment", enum("positive", "neutral", "negative", "mixed")),
                 f("score", num(), desc="-1 (negative) to 1 (positive)"),
                 f("aspects", arr(aspect, 0, 6)),
                 f("language", pat(LANG)))


def send_email():
    att = Model("Attachment", f("filename", s()), f("url", pat(URL)))
    return Model("SendEmail",
                 f("to", arr(pat(EMAIL), 1, 10)),
                 f("cc", arr(pat(EMAIL), 0, 10), opt=True),
                 f("subject", s(maxLength=150)),
                 f("body", s()),
                 f("importance", enum("low", "normal", "high"), opt=True),
                 f("send_at", fmt("date-time"), opt=True),
                 f("attachments", arr(att, 0, 5), opt=True))


def job_posting():
    loc = Model("JobLocation", f("city", s()), f("country", pat(COUNTRY)),
                f("remote", enum("onsite", "hybrid", "remote")))
    salary = Model("Salary", f("min", i(0, 10000000)), f("max", i(0, 10000000)),
                   f("currency", pat(CURRENCY)), f("period", enum("hour", "month", "year")))
    return Model("JobPosting",
                 f("role", s()),
                 f("company", s()),
                 f("location", loc),
                 f("salary", salary, opt=True),
                 f("employment_type", enum("full_time", "part_time", "contract", "internship")),
                 f("skills", arr(s(), 1, 15)),
                 f("description", s()),
                 f("posted", fmt("date")),
                 f("apply_url", pat(URL)))


def resume():
    job = Model("Experience", f("employer", s()), f("role", s()),
                f("start_date", fmt("date")),
                f("end_date", {"anyOf": [fmt("date"), {"type": "null"}]}),
                f("highlights", arr(s(), 0, 5)))
    edu = Model("Education", f("school", s()), f("degree", s()), f("year", i(1950, 2030)))
    lang = Model("LanguageSkill", f("language", pat(LANG)),
                 f("level", enum("A1", "A2", "B1", "B2", "C1", "C2", "native")))
    return Model("Candidate",
                 f("full_name", s()),
                 f("email", pat(EMAIL)),
                 f("phone", pat(PHONE), opt=True),
                 f("headline", s(maxLength=120)),
                 f("experience", arr(job, 0, 10)),
                 f("education", arr(edu, 0, 5)),
                 f("skills", arr(s(), 0, 30)),
                 f("languages", arr(lang, 0, 6)))


def bank_transaction():
    party = Model("Counterparty", f("name", s()),
                  f("iban", pat(r"^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$"), opt=True))
    return Model("Transaction",
                 f("transaction_id", fmt("uuid")),
                 f("booked", fmt("date")),
                 f("amount", num()),
                 f("currency", pat(CURRENCY)),
                 f("direction", enum("debit", "credit")),
                 f("merchant", s(), opt=True),
                 f("category", enum("groceries", "transport", "rent", "salary", "dining",
                                    "utilities", "other")),
                 f("counterparty", party, opt=True),
                 f("balance", num()),
                 f("reference", s(maxLength=140), opt=True))


def hotel_search():
    guests = Model("Guests", f("adults", i(1, 8)), f("children", i(0, 6)))
    return Model("SearchHotels",
                 f("location", s(minLength=2)),
                 f("check_in", fmt("date")),
                 f("check_out", fmt("date")),
                 f("guests", guests),
                 f("rooms", i(1, 5)),
                 f("price_max", i(exclusiveMinimum=0), opt=True,
                   desc="Per night, in the local currency"),
                 f("amenities", arr(enum("wifi", "parking", "pool", "gym", "spa", "breakfast",
                                         "pets"), 0, 7), opt=True),
                 f("sort", enum("price", "rating", "distance"), opt=True))


def reservation():
    return Model("ReserveTable",
                 f("restaurant", s()),
                 f("guests", i(1, 20)),
                 f("date", fmt("date")),
                 f("time", pat(HHMM)),
                 f("guest_name", s()),
                 f("phone", pat(PHONE)),
                 f("special_requests", s(maxLength=300), opt=True),
                 f("occasion", enum("birthday", "anniversary", "business", "none"), opt=True))


def bug_report():
    env = Model("Environment", f("os", enum("linux", "macos", "windows", "android", "ios")),
                f("version", pat(SEMVER)), f("browser", s(), opt=True))
    return Model("BugReport",
                 f("title", s(minLength=5, maxLength=120)),
                 f("body", s()),
                 f("labels", arr(enum("bug", "enhancement", "docs", "good first issue"), 0, 4)),
                 f("severity", enum("S1", "S2", "S3", "S4")),
                 f("steps_to_reproduce", arr(s(), 1, 10)),
                 f("environment", env),
                 f("expected", s()),
                 f("actual", s()),
                 f("assignees", arr(pat(HANDLE), 0, 3)))


def meeting_summary():
    action = Model("ActionItem", f("task", s()), f("owner", s()),
                   f("due", fmt("date"), opt=True),
                   f("status", enum("open", "in_progress", "done")))
    return Model("MeetingSummary",
                 f("title", s()),
                 f("date", fmt("date")),
                 f("attendees", arr(s(), 1, 20)),
                 f("summary", s()),
                 f("decisions", arr(s(), 0, 10)),
                 f("action_items", arr(action, 0, 15)),
                 f("next_meeting", fmt("date-time"), opt=True))


def translation():
    term = Model("GlossaryTerm", f("term", s()), f("translation", s()))
    return Model("Translation",
                 f("source_lang", pat(LANG)),
                 f("target_lang", pat(LANG)),
                 f("source_text", s()),
                 f("translated_text", s()),
                 f("formality", enum("formal", "informal"), opt=True),
                 f("glossary", arr(term, 0, 5), opt=True),
                 f("alternatives", arr(s(), 0, 3), opt=True))


def qa_answer():
    cite = Model("Citation", f("source_url", pat(URL)), f("title", s()),
                 f("quote", s(maxLength=300)))
    return Model("Answer",
                 f("answer", s()),
                 f("confidence", num()),
                 f("citations", arr(cite, 0, 5)),
                 f("follow_up_questions", arr(s(), 0, 3)),
                 f("answerable", b()))


def shipment():
    ev = Model("TrackingEvent", f("timestamp", fmt("date-time")), f("location", s()),
               f("description", s()))
    who = Model("Recipient", f("name", s()), f("city", s()), f("country", pat(COUNTRY)))
    return Model("Shipment",
                 f("tracking_number", s(minLength=8, maxLength=40)),
                 f("carrier", s()),
                 f("status", enum("label_created", "in_transit", "out_for_delivery",
                                  "delivered", "exception")),
                 f("estimated_delivery", fmt("date"), opt=True),
                 f("events", arr(ev, 1, 20)),
                 f("recipient", who))


def patient_intake():
    med = Model("Medication", f("medication", s()),
                f("dose_mg", i(exclusiveMinimum=0, exclusiveMaximum=5000)),
                f("frequency", enum("once_daily", "twice_daily", "as_needed", "weekly")))
    ins = Model("Insurance", f("provider", s()), f("member_id", s(minLength=4, maxLength=20)))
    return Model("PatientIntake",
                 f("patient_name", s()),
                 f("date_of_birth", fmt("date")),
                 f("sex", enum("female", "male", "other", "undisclosed"), opt=True),
                 f("symptoms", arr(s(), 1, 10)),
                 f("allergies", arr(s(), 0, 10)),
                 f("medications", arr(med, 0, 10)),
                 f("visit_reason", s(maxLength=500)),
                 f("urgency", i(1, 5)),
                 f("insurance", ins, opt=True))


def book():
    series = Model("Series", f("series_title", s()), f("position", i(1, 100)))
    return Model("Book",
                 f("title", s()),
                 f("authors", arr(s(), 1, 5)),
                 f("isbn", pat(r"^(97[89])?\d{9}[\dX]$")),
                 f("year", i(1450, 2030)),
                 f("publisher", s(), opt=True),
                 f("language", pat(LANG)),
                 f("pages", i(1, 5000)),
                 f("genres", arr(enum("fiction", "fantasy", "history", "science", "romance",
                                      "biography"), 1, 3)),
                 f("series", series, opt=True),
                 f("summary", s()))


def http_request():
    return Model("HttpRequest",
                 f("method", enum("GET", "POST", "PUT", "PATCH", "DELETE")),
                 f("url", pat(URL)),
                 f("headers", strmap(s())),
                 f("query", strmap({"anyOf": [s(), i()]})),
                 f("body", {}, opt=True, desc="Any JSON body"),
                 f("timeout_ms", i(100, 60000), opt=True))


def todo_plan():
    task = Model("Task", f("title", s()), f("done", b()),
                 f("priority", enum("low", "medium", "high")),
                 f("due", fmt("date"), opt=True),
                 f("subtasks", arr(Ref("Task"), 0, 5)), recursive=True)
    return Model("Plan", f("goal", s()), f("tasks", arr(task, 1, 10)))


def comment_thread():
    return Model("Comment",
                 f("author", s()),
                 f("text", s(minLength=1)),
                 f("created_at", fmt("date-time")),
                 f("likes", i(0)),
                 f("replies", arr(ROOT, 0, 5)))


def chart_spec():
    x = Model("XAxis", f("label", s()), f("type", enum("category", "time", "linear")))
    y = Model("YAxis", f("label", s()), f("log_scale", b(), opt=True))
    series = Model("Series", f("series_name", s()), f("data", arr(num(), 1, 50)),
                   f("color", pat(r"^#[0-9a-fA-F]{6}$")))
    return Model("ChartSpec",
                 f("chart_type", enum("bar", "line", "pie", "scatter")),
                 f("title", s()),
                 f("x_axis", x), f("y_axis", y),
                 f("series", arr(series, 1, 6)),
                 f("legend", b()))


def real_estate():
    agent = Model("Agent", f("name", s()), f("phone", pat(PHONE)), f("email", pat(EMAIL)))
    return Model("Listing",
                 f("listing_id", fmt("uuid")),
                 f("address", address()),
                 f("price", i(0)),
                 f("currency", pat(CURRENCY)),
                 f("bedrooms", i(0, 20)),
                 f("bathrooms", num()),
                 f("area_m2", num()),
                 f("property_type", enum("apartment", "house", "studio", "townhouse")),
                 f("amenities", arr(s(), 0, 10)),
                 f("available_from", fmt("date"), opt=True),
                 f("description", s()),
                 f("agent", agent, opt=True),
                 f("photos", arr(pat(URL), 0, 10)))


def vehicle():
    seller = Model("Seller", f("name", s()), f("type", enum("dealer", "private")))
    return Model("Vehicle",
                 f("make", s()), f("model", s()),
                 f("year", i(1950, 2027)),
                 f("mileage_km", i(0, 2000000)),
                 f("fuel", enum("petrol", "diesel", "hybrid", "electric")),
                 f("transmission", enum("manual", "automatic")),
                 f("price", num()),
                 f("color", s()),
                 f("vin", pat(r"^[A-HJ-NPR-Z0-9]{17}$")),
                 f("features", arr(s(), 0, 10)),
                 f("seller", seller),
                 f("location", s()))


def quiz():
    choice = Model("Choice", f("id", pat(r"^[A-F]$")), f("text", s()))
    return Model("QuizQuestion",
                 f("question", s()),
                 f("choices", arr(choice, 2, 6)),
                 f("correct", pat(r"^[A-F]$")),
                 f("explanation", s()),
                 f("difficulty", enum("easy", "medium", "hard")),
                 f("topic", s(), opt=True))


def place_search():
    place = Model("PlaceResult", f("place_name", s()), f("address", s()), f("lat", num()),
                  f("lon", num()), f("rating", num(), opt=True),
                  f("price_level", i(1, 4), opt=True), f("open_now", b()),
                  f("categories", arr(s(), 0, 5)))
    return Model("PlaceSearch", f("results", arr(place, 0, 10)),
                 f("next_page_token", {"type": ["string", "null"]}))


def stock_quote():
    bar = Model("Bar", f("date", fmt("date")), f("open", num()), f("close", num()),
                f("volume", i(0)))
    return Model("StockQuote",
                 f("symbol", pat(r"^[A-Z0-9.]{1,8}$")),
                 f("exchange", enum("NASDAQ", "NYSE", "XETRA", "B3", "TSE", "SIX")),
                 f("price", num()),
                 f("change_pct", num()),
                 f("currency", pat(CURRENCY)),
                 f("as_of", fmt("date-time")),
                 f("history", arr(bar, 0, 30)))


def survey():
    rating = Model("RatingAnswer", f("kind", {"const": "rating"}), f("question_id", s()),
                   f("rating", i(1, 5)))
    choice = Model("ChoiceAnswer", f("kind", {"const": "choice"}), f("question_id", s()),
                   f("option", s()))
    free = Model("TextAnswer", f("kind", {"const": "text"}), f("question_id", s()),
                 f("text", s(maxLength=500)))
    return Model("SurveyResponse",
                 f("respondent_id", fmt("uuid")),
                 f("submitted_at", fmt("date-time")),
                 f("answers", arr({"oneOf": [rating, choice, free]}, 1, 15)),
                 f("nps", i(0, 10)),
                 f("consent", b()))


def contact_card():
    mail = Model("EmailEntry", f("email", pat(EMAIL)), f("type", enum("home", "work")))
    tel = Model("PhoneEntry", f("number", pat(PHONE)), f("type", enum("mobile", "home", "work")))
    social = Model("Social", f("twitter", pat(HANDLE), opt=True),
                   f("website", pat(URL), opt=True))
    return Model("Contact",
                 f("full_name", s()),
                 f("emails", arr(mail, 0, 3)),
                 f("phones", arr(tel, 0, 3)),
                 f("company", s(), opt=True),
                 f("role", s(), opt=True),
                 f("birthday", fmt("date"), opt=True),
                 f("social", social, opt=True))


def playlist():
    track = Model("Track", f("track", s()), f("artist", s()), f("duration_s", i(30, 1200)),
                  f("explicit", b()))
    return Model("Playlist",
                 f("playlist_name", s(maxLength=100)),
                 f("description", s(), opt=True),
                 f("tracks", arr(track, 1, 30)),
                 f("public", b()),
                 f("mood", s(maxLength=4)))


HARMS = ("hate", "harassment", "self_harm", "sexual", "violence", "spam")


def moderation():
    flags = Model("Categories", *[f(h, b()) for h in HARMS])
    scores = Model("CategoryScores", *[f(h, num()) for h in HARMS])
    return Model("Moderation",
                 f("flagged", b()),
                 f("categories", flags),
                 f("category_scores", scores),
                 f("action", enum("allow", "review", "block")),
                 f("reason", s(), opt=True))


def feature_config():
    limits = Model("Limits", f("max_requests_per_minute", i(1, 100000)),
                   f("max_upload_mb", i(1, 10240)))
    rollout = Model("Rollout", f("percentage", i(0, 100)),
                    f("regions", arr(enum("eu-west-1", "us-east-1", "ap-northeast-1"), 1, 3)))
    return Model("ServiceConfig",
                 f("service", s()),
                 f("version", pat(SEMVER)),
                 f("flags", strmap(b())),
                 f("limits", limits),
                 f("rollout", rollout),
                 f("owners", arr(pat(EMAIL), 1, 3)))


def math_solution():
    step = Model("Step", f("explanation", s()), f("work", s()))
    return Model("MathSolution",
                 f("expression", s()),
                 f("steps", arr(step, 1, 12)),
                 f("final_answer", s()),
                 f("verified", b()))


def intent():
    timer = Model("SetTimer", f("intent", {"const": "set_timer"}),
                  f("duration_s", i(1, 86400)), f("label", s(), opt=True))
    music = Model("PlayMusic", f("intent", {"const": "play_music"}), f("query", s()),
                  f("artist", s(), opt=True), f("shuffle", b()))
    msg = Model("SendMessage", f("intent", {"const": "send_message"}), f("recipient", s()),
                f("text", s(minLength=1)))
    weather = Model("WeatherQuery", f("intent", {"const": "get_weather"}),
                    f("location", s()), f("date", fmt("date"), opt=True))
    return {"oneOf": [timer, music, msg, weather]}


def tool_call():
    search = Model("SearchWebArgs", f("query", s(minLength=1)), f("num_results", i(1, 10)))
    weather = Model("GetWeatherArgs", f("location", s()),
                    f("unit", enum("celsius", "fahrenheit")))
    remind = Model("CreateReminderArgs", f("text", s()), f("remind_at", fmt("date-time")))
    calls = [Model(name.title().replace("_", "") + "Call", f("name", {"const": name}),
                   f("arguments", args))
             for name, args in (("search_web", search), ("get_weather", weather),
                                ("create_reminder", remind))]
    return {"anyOf": calls}


def triples():
    triple = {"type": "array", "prefixItems": [
        {"type": "string", "title": "subject_entity"},
        {"type": "string", "title": "predicate",
         "enum": ["works_for", "located_in", "founded", "born_in"]},
        {"type": "string", "title": "object_entity"}], "items": False, "minItems": 3}
    return Model("KnowledgeGraph", f("triples", arr(triple, 1, 20)),
                 f("source", s(), opt=True))


def geojson():
    point = Model("Point", f("type", {"const": "Point"}),
                  f("coordinates", {"type": "array", "prefixItems": [
                      {"type": "number", "title": "lon"}, {"type": "number", "title": "lat"}],
                      "minItems": 2, "maxItems": 2}))
    props = Model("FeatureProperties", f("place_name", s()),
                  f("category", enum("cafe", "museum", "park", "station")))
    return Model("Feature", f("type", {"const": "Feature"}), f("geometry", point),
                 f("properties", props))


def webhook():
    data = Model("OrderData", f("order_id", fmt("uuid")), f("amount", i(0)),
                 f("currency", pat(CURRENCY)))
    return Model("WebhookEvent",
                 f("id", pat(r"^evt_[A-Za-z0-9]{16}$")),
                 f("type", enum("order.created", "order.paid", "order.refunded")),
                 f("created", fmt("date-time")),
                 f("data", data),
                 f("livemode", b()))


def code_edit():
    edit = Model("Edit", f("start_line", i(1)), f("end_line", i(1)), f("replacement", s()))
    return Model("EditFile",
                 f("path", pat(r"\.(py|ts|go|c|h|tsx)$")),
                 f("edits", arr(edit, 1, 10)),
                 f("commit_message", s(minLength=5, maxLength=72)))


def file_search():
    return Model("SearchFiles",
                 f("pattern", s(minLength=1), desc="Text to look for"),
                 f("paths", arr(s(), 0, 5), opt=True),
                 f("case_sensitive", b(), opt=True),
                 f("max_results", i(1, 500), opt=True))


def org_chart():
    emp = Model("Employee", f("name", s()), f("role", s()), f("department", s()),
                f("reports", arr(Ref("Employee"), 0, 4)), recursive=True)
    return Model("OrgChart", f("company", s()), f("ceo", emp))


def social_post():
    return Model("SocialPost",
                 f("platform", enum("x", "mastodon", "linkedin", "instagram")),
                 f("caption", s(maxLength=280)),
                 f("hashtags", arr(pat(r"^#[A-Za-z0-9_]+$"), 0, 10)),
                 f("mentions", arr(pat(HANDLE), 0, 5)),
                 f("schedule_at", fmt("date-time"), opt=True),
                 f("alt_text", s(maxLength=1000), opt=True))


def expense_report():
    expense = Model("Expense", f("date", fmt("date")), f("merchant", s()),
                    f("amount", num()), f("currency", pat(CURRENCY)),
                    f("category", enum("travel", "meals", "lodging", "supplies", "other")),
                    f("receipt_url", pat(URL), opt=True))
    return Model("ExpenseReport",
                 f("employee", person_ref()),
                 f("period", {"type": "array", "prefixItems": [fmt("date"), fmt("date")],
                              "minItems": 2, "maxItems": 2}),
                 f("expenses", arr(expense, 1, 25)),
                 f("total", num()),
                 f("approved", {"type": ["boolean", "null"]}))


FAMILIES = [user_profile, product, order, invoice, address_check, event, calendar_booking,
            support_ticket, log_record, sensor_reading, recipe, movie_review, flight_search,
            weather_tool, weather_report, sql_tool, classification, ner, sentiment, send_email,
            job_posting, resume, bank_transaction, hotel_search, reservation, bug_report,
            meeting_summary, translation, qa_answer, shipment, patient_intake, book,
            http_request, todo_plan, comment_thread, chart_spec, real_estate, vehicle, quiz,
            place_search, stock_quote, survey, contact_card, playlist, moderation,
            feature_config, math_solution, intent, tool_call, triples, geojson, webhook,
            code_edit, file_search, org_chart, social_post, expense_report]
STYLES = ("strict", "pydantic", "tool")


# ---- rendering -------------------------------------------------------------------------------

def nullable(x):
    if isinstance(x.get("type"), str) and "enum" not in x and "const" not in x:
        return {**x, "type": [x["type"], "null"]}
    return {"anyOf": [x, {"type": "null"}]}


class Renderer:
    def __init__(self, style):
        self.style = style
        self.defs = {}
        self.defs_key = "definitions" if style == "strict" else "$defs"

    def root(self, x):
        out = self.obj(x) if isinstance(x, Model) else self.node(x)
        if self.defs:
            out[self.defs_key] = self.defs
        if self.style == "tool":
            out = {"$schema": "https://json-schema.org/draft/2020-12/schema", **out}
        return out

    def node(self, x):
        if isinstance(x, Model):
            if self.style != "pydantic" and not x.recursive:
                return self.obj(x)
            if x.title not in self.defs:
                self.defs[x.title] = None  # named first: a recursive model finds it
                self.defs[x.title] = self.obj(x)
            return {"$ref": f"#/{self.defs_key}/{x.title}"}
        if isinstance(x, Ref):
            return {"$ref": f"#/{self.defs_key}/{x.title}"}
        if x is ROOT:
            return {"$ref": "#"}
        if isinstance(x, dict):
            return {k: self.node(v) for k, v in x.items()}
        if isinstance(x, list):
            return [self.node(v) for v in x]
        return x

    def obj(self, m):
        props, required = {}, []
        for fd in m.fields:
            x = self.node(fd.node)
            if fd.opt and self.style == "strict":
                x = nullable(x)
            elif fd.opt and self.style == "pydantic":
                x = {"anyOf": [x, {"type": "null"}], "default": None}
            if self.style == "pydantic":
                x = {**x, "title": fd.name.replace("_", " ").title()}
            elif self.style == "tool" and fd.desc:
                x = {**x, "description": fd.desc}
            props[fd.name] = x
            if self.style == "strict" or not fd.opt:
                required.append(fd.name)
        o = {"type": "object", "properties": props}
        if required:
            o["required"] = required
        if self.style == "pydantic":
            o["title"] = m.title
        else:
            o["additionalProperties"] = False
        return o


# ---- instances -------------------------------------------------------------------------------

EXTRA_KEYS = {
    "attributes": ["region", "user_agent", "request_id", "tenant"],
    "headers": ["Accept", "X-Request-Id", "Authorization", "Accept-Language"],
    "query": ["page", "sort", "q", "limit"],
    "flags": ["dark_mode", "beta_search", "new_checkout", "legacy_export"],
}
EXTRA_VALUES = {
    "region": lambda r: r.choice(["eu-west-1", "us-east-1", "ap-northeast-1"]),
    "user_agent": lambda r: "Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0",
    "request_id": T.uuid, "X-Request-Id": T.uuid, "tenant": lambda r: r.choice(T.COMPANIES),
    "Accept": lambda r: "application/json",
    "Authorization": lambda r: "Bearer eyJhbGciOiJIUzI1NiJ9.%x" % r.getrandbits(64),
    "Accept-Language": lambda r: r.choice(["pt-BR,pt;q=0.9", "de-CH", "ja-JP"]),
    "sort": lambda r: r.choice(["-created_at", "price", "relevance"]),
    "q": lambda r: r.choice(T.PRODUCTS),
}
NESTING = 8  # objects and arrays nested at most (indented output stays within 20 spaces)


class Instances:
    def __init__(self, schema, r):
        self.root, self.r = schema, r

    def resolve(self, ref):
        at = self.root
        for seg in ref.lstrip("#").split("/")[1:]:
            at = at[seg.replace("~1", "/").replace("~0", "~")]
        return at

    def value(self, x, hint, depth):
        r = self.r
        if x is True or x == {} or (isinstance(x, dict) and set(x) <= {"description", "title"}):
            return self.any_value(hint)
        if "$ref" in x:
            return self.value(self.resolve(x["$ref"]), hint, depth)
        hint = hint or x.get("title", "").lower().replace(" ", "_")
        if "const" in x:
            return x["const"]
        if "enum" in x:
            return r.choice(x["enum"])
        alts = x.get("anyOf") or x.get("oneOf")
        if alts:
            real = [a for a in alts if a.get("type") != "null"]
            if len(real) < len(alts) and (depth >= NESTING - 2 or r.random() < 0.2):
                return None
            return self.value(r.choice(real), hint, depth)
        t = x.get("type")
        if isinstance(t, list):
            real = [k for k in t if k != "null"]
            if len(real) < len(t) and r.random() < 0.2:
                return None
            t = r.choice(real)
        if t is None:
            t = "object" if "properties" in x else "array" if "items" in x else None
        return getattr(self, "v_" + t)(x, hint, depth) if t else self.any_value(hint)

    def any_value(self, hint):
        r = self.r
        return {"message": T.string_for(r, "message"), "count": r.randint(1, 40),
                "tags": [T.string_for(r, "tags") for _ in range(r.randint(0, 3))],
                "ok": r.random() < 0.5}

    def v_string(self, x, hint, depth):
        r = self.r
        if "format" in x:
            return {"date": T.date, "time": T.time, "date-time": T.date_time,
                    "uuid": T.uuid}[x["format"]](r)
        if "pattern" in x:
            return self.matching(x["pattern"], hint)
        return T.fit_length(r, T.string_for(r, hint or ""), x.get("minLength", 0),
                            x.get("maxLength"))

    def matching(self, pattern, hint):
        """A string matching pattern: the property's usual value if it does, else one made for
        the pattern (text.PATTERN_VALUES)."""
        for _ in range(4):
            v = T.string_for(self.r, hint or "")
            if re.search(pattern, v):
                return v
        return T.PATTERN_VALUES[pattern](self.r)

    def v_integer(self, x, hint, depth):
        return T.integer_for(self.r, hint, x.get("minimum"), x.get("maximum"))

    def v_number(self, x, hint, depth):
        return T.number_for(self.r, hint)

    def v_boolean(self, x, hint, depth):
        return self.r.random() < 0.5

    def v_null(self, x, hint, depth):
        return None

    def v_object(self, x, hint, depth):
        r, out = self.r, {}
        required = set(x.get("required", []))
        for k, sub in x.get("properties", {}).items():
            if k in required or (depth < NESTING - 2 and r.random() < 0.65):
                out[k] = self.value(sub, k, depth + 1)
        extra = x.get("additionalProperties")
        if isinstance(extra, dict):
            for k in r.sample(EXTRA_KEYS[hint], r.randint(1, 3)):
                gen = EXTRA_VALUES.get(k)
                out[k] = gen(r) if gen and extra.get("type") == "string" else \
                    self.value(extra, k, depth + 1)
        return out

    def v_array(self, x, hint, depth):
        r = self.r
        prefix = x.get("prefixItems", [])
        out = [self.value(p, None, depth + 1) for p in prefix]
        if prefix:
            return out
        lo = x.get("minItems", 0)
        hi = min(x.get("maxItems", lo + 4), lo + (12 if hint == "data" else 4))
        n = lo if depth >= NESTING - 2 else r.randint(lo, max(lo, hi))
        return [self.value(x["items"], hint, depth + 1) for _ in range(n)]


# ---- validation and output -------------------------------------------------------------------

CHECKER = jsonschema.FormatChecker()


@CHECKER.checks("time", raises=ValueError)
def _time(v):
    return not isinstance(v, str) or bool(
        re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)",
                     v))


@CHECKER.checks("date-time", raises=ValueError)
def _date_time(v):
    if not isinstance(v, str):
        return True
    d, sep, t = v.partition("T")
    datetime.date.fromisoformat(d)
    return sep == "T" and _time(t)


def serialize(value, k):
    """Half indented, half on one line (with and without spaces after , and :)."""
    if k % 2:
        out = json.dumps(value, ensure_ascii=False, indent=2)
        deepest = max(len(line) - len(line.lstrip(" ")) for line in out.splitlines())
        if deepest > 20:  # the grammars allow a line break and up to 20 blanks
            raise SystemExit(f"gen.py: an indented instance nests too deep ({deepest} blanks)")
        return out
    if k % 4 == 0:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return json.dumps(value, ensure_ascii=False)


def entries():
    k = 0
    for family in FAMILIES:
        for style in STYLES:
            name = f"{family.__name__}_{style}"
            schema = Renderer(style).root(family())
            jsonschema.Draft202012Validator.check_schema(schema)
            validator = jsonschema.Draft202012Validator(schema, format_checker=CHECKER)
            r = random.Random(SEED * 1000003 + zlib.crc32(name.encode()))
            gen = Instances(schema, r)
            texts = []
            for _ in range(r.randint(2, 3)):
                value = gen.value(schema, None, 0)
                errors = sorted(validator.iter_errors(value), key=str)
                if errors:
                    raise SystemExit(f"gen.py: {name}: an instance is not valid: "
                                     f"{errors[0].message}\n{json.dumps(value)}")
                texts.append(serialize(value, k))
                k += 1
            yield {"name": name, "schema": schema, "instances": texts}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=0,
                    help="only N schemas, spread over the families (default: all)")
    ap.add_argument("--out", help="output file (default: standard output)")
    args = ap.parse_args()
    all_entries = list(entries())
    if args.limit and args.limit < len(all_entries):
        step = len(all_entries) / args.limit
        all_entries = [all_entries[int(j * step)] for j in range(args.limit)]
    out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
    for e in all_entries:
        out.write(json.dumps(e, ensure_ascii=False) + "\n")
    if args.out:
        out.close()


if __name__ == "__main__":
    main()
