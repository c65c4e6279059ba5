"""emf.py - a validator of CloudWatch Embedded Metric Format documents, written from the
specification (docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/
CloudWatch_Embedded_Metric_Format_Specification.html), for tests of the lines the agent prints.

problems(doc) lists every rule the document breaks (empty: valid):
- the root is a JSON object with an `_aws` object member (and, as a log event, it is the whole
  line: no data before or after it);
- `_aws.Timestamp` is an integer number of milliseconds since the epoch;
- `_aws.CloudWatchMetrics` is an array of MetricDirective objects, each with exactly Namespace
  (1-255 characters), Dimensions (an array of DimensionSets, each an array of at most 30 strings)
  and Metrics (at most 100 MetricDefinitions);
- a MetricDefinition has Name (1-255 characters), optional Unit (a CloudWatch unit) and optional
  StorageResolution (1 or 60), nothing else;
- every referenced dimension is a root member holding a 1-1024 character string, every
  referenced metric a root member holding a number or an array of at most 100 numbers."""

import json
import numbers

UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
         "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
         "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
         "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
         "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}
# The awslogs driver splits a line longer than this into several events: EMF would be lost.
AWSLOGS_MAX_LINE = 16 * 1024


def _is_num(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _name_ok(v):
    return isinstance(v, str) and 1 <= len(v) <= 255


def problems(doc):
    out = []
    if not isinstance(doc, dict) or not isinstance(doc.get("_aws"), dict):
        return ["the root is not an object with an _aws object"]
    aws = doc["_aws"]
    ts = aws.get("Timestamp")
    if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
        out.append("Timestamp %r is not an integer of milliseconds" % (ts,))
    dirs = aws.get("CloudWatchMetrics")
    if not isinstance(dirs, list) or not dirs:
        return out + ["CloudWatchMetrics is not a non-empty array"]
    for d in dirs:
        if not isinstance(d, dict) or set(d) != {"Namespace", "Dimensions", "Metrics"}:
            out.append("a directive must have exactly Namespace, Dimensions, Metrics: %r" % (d,))
            continue
        if not _name_ok(d["Namespace"]):
            out.append("Namespace %r is not 1-255 characters" % (d["Namespace"],))
        if not isinstance(d["Dimensions"], list):
            out.append("Dimensions is not an array")
        else:
            for ds in d["Dimensions"]:
                if not isinstance(ds, list) or len(ds) > 30:
                    out.append("DimensionSet %r is not an array of at most 30 keys" % (ds,))
                    continue
                for k in ds:
                    v = doc.get(k) if isinstance(k, str) else None
                    if not isinstance(v, str) or not 1 <= len(v) <= 1024:
                        out.append("dimension %r has no 1-1024 character string member" % (k,))
        ms = d["Metrics"]
        if not isinstance(ms, list) or len(ms) > 100:
            out.append("Metrics is not an array of at most 100 definitions")
            continue
        for m in ms:
            if not isinstance(m, dict) or not set(m) <= {"Name", "Unit", "StorageResolution"} \
                    or not _name_ok(m.get("Name")):
                out.append("bad MetricDefinition %r" % (m,))
                continue
            if "Unit" in m and m["Unit"] not in UNITS:
                out.append("unit %r is not a CloudWatch unit" % (m["Unit"],))
            if "StorageResolution" in m and m["StorageResolution"] not in (1, 60):
                out.append("StorageResolution %r is not 1 or 60" % (m["StorageResolution"],))
            v = doc.get(m["Name"])
            if _is_num(v):
                continue
            if not isinstance(v, list) or not 1 <= len(v) <= 100 or \
                    not all(_is_num(x) for x in v):
                out.append("metric %r: member %r is not a number or 1-100 numbers" %
                           (m["Name"], v))
    return out


def documents(stdout_text):
    """Every stdout line that carries `_aws`, parsed, with its raw length: [(doc, length)].
    Each such line must be one JSON object and nothing else (a log event must be exactly it)."""
    out = []
    for line in stdout_text.splitlines():
        if '"_aws"' not in line:
            continue
        doc = json.loads(line)
        out.append((doc, len(line.encode())))
    return out


def metric_names(doc):
    return [m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
