// The playground's wire helpers, free of the page: DashScope error envelopes as one line, server-sent
// events as data strings, and a request written as curl or as Python (openai SDK).

const MAX_EVENT_CHARS = 4 * 1024 * 1024; // one SSE event larger than this is a broken stream

export function describeError(status, text) {
  // The DashScope envelope {"error": {"code", "message"}, "request_id"}, as JSON or as one SSE data line.
  const payload = text.trim().replace(/^data:\s*/, "");
  try {
    const { error, request_id: requestId } = JSON.parse(payload);
    if (error && error.message) {
      const prefix = status ? `${status} ` : "";
      return `${prefix}${error.code ?? "error"}: ${error.message}${requestId ? ` (request ${requestId})` : ""}`;
    }
  } catch {
    // not an envelope: show the raw text below
  }
  return `${status || "error"}: ${text.slice(0, 300) || "empty answer"}`;
}

export async function* sseData(response) {
  // Yields the data of each server-sent event; ends at [DONE] or when the body ends.
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart());
      if (!data.length) continue;
      if (data.join("\n") === "[DONE]") return;
      yield data.join("\n");
    }
    if (buffer.length > MAX_EVENT_CHARS) throw new Error("the stream sent an event larger than 4 MiB");
  }
}

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

export function curlSnippet(endpoint, body) {
  return [
    `curl -N ${shellQuote(endpoint)} \\`,
    `  -H "Authorization: Bearer $DASHSCOPE_API_KEY" \\`,
    "  -H 'Content-Type: application/json' \\",
    `  -d ${shellQuote(JSON.stringify(body, null, 2))}`,
  ].join("\n");
}

function pyLiteral(value, indent = "") {
  if (value === null) return "None";
  if (typeof value === "boolean") return value ? "True" : "False";
  if (typeof value !== "object") return JSON.stringify(value); // numbers, and strings: JSON escapes are Python's
  const inner = `${indent}    `;
  const items = Array.isArray(value)
    ? value.map((v) => pyLiteral(v, inner))
    : Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${pyLiteral(v, inner)}`);
  const [open, close] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  if (!items.length) return open + close;
  return `${open}\n${items.map((i) => inner + i).join(",\n")},\n${indent}${close}`;
}

const SDK_PARAMS = new Set([
  "model", "messages", "stream", "stream_options", "max_tokens", "response_format", "tools", "tool_choice",
]);

export function pythonSnippet(baseUrl, body) {
  const args = Object.entries(body).filter(([k]) => SDK_PARAMS.has(k));
  const extra = Object.fromEntries(Object.entries(body).filter(([k]) => !SDK_PARAMS.has(k)));
  if (Object.keys(extra).length) args.push(["extra_body", extra]); // DashScope fields the SDK does not know
  return [
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${JSON.stringify(baseUrl)}, api_key=os.environ["DASHSCOPE_API_KEY"])`,
    "stream = client.chat.completions.create(",
    ...args.map(([k, v]) => `    ${k}=${pyLiteral(v, "    ")},`),
    ")",
    "for chunk in stream:",
    "    if chunk.choices:",
    "        delta = chunk.choices[0].delta",
    '        print(getattr(delta, "reasoning_content", None) or delta.content or "", end="", flush=True)',
    "    elif chunk.usage:",
    '        print("\\n", chunk.usage)',
  ].join("\n");
}
