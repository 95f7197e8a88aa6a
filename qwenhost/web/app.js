// qwenhost playground: one page over the public compatible-mode API. No framework, no build step.
// The API key lives in sessionStorage (this tab), or in localStorage when "remember" is ticked.

import { curlSnippet, describeError, pythonSnippet, sseData } from "./wire.js";

const API = "/compatible-mode/v1";
const KEY_ITEM = "qwenhost.apiKey";
const MODEL_ITEM = "qwenhost.model";
const MAX_IMAGE_BYTES = 10 * 1024 * 1024; // DashScope's (and qwenhost's) image limit

const $ = (id) => document.getElementById(id);
// epoch: bumped by "New chat", so an answer still streaming then is not added to the new conversation
const state = { models: new Map(), history: [], pendingToolCalls: [], lastBody: null, controller: null, epoch: 0 };

class InputError extends Error {
  constructor(message, input) {
    super(message);
    this.input = input;
  }
}

// ---- the key, kept in the browser only ------------------------------------------------------------
function loadKey() {
  const remembered = localStorage.getItem(KEY_ITEM);
  $("remember-key").checked = remembered !== null;
  $("api-key").value = remembered ?? sessionStorage.getItem(KEY_ITEM) ?? "";
}

function saveKey() {
  const key = $("api-key").value.trim();
  const remember = $("remember-key").checked;
  sessionStorage.setItem(KEY_ITEM, key);
  if (remember) localStorage.setItem(KEY_ITEM, key);
  else localStorage.removeItem(KEY_ITEM);
}

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// ---- the API ---------------------------------------------------------------------------------------
async function fetchModels() {
  const response = await fetch(`${API}/models`, { headers: authHeaders() });
  const text = await response.text();
  if (response.status === 401 && !$("api-key").value.trim()) throw new Error("this server needs an API key: type it above.");
  if (!response.ok) throw new Error(describeError(response.status, text));
  return JSON.parse(text).data;
}

async function streamChat(body, turn, signal) {
  const response = await fetch(`${API}/chat/completions`, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...authHeaders() },
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw new Error(describeError(response.status, await response.text()));
  for await (const data of sseData(response)) {
    const chunk = JSON.parse(data);
    if (chunk.error) throw new Error(describeError(0, data));
    turn.onChunk(chunk);
  }
}

// ---- the request -----------------------------------------------------------------------------------
function optionalInt(input, name) {
  const raw = input.value.trim();
  if (!raw) return undefined;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new InputError(`${name} must be a positive whole number.`, input);
  return value;
}

function optionalJson(input, name, check) {
  const raw = input.value.trim();
  if (!raw) return undefined;
  let value;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw new InputError(`${name} is not valid JSON: ${err.message}`, input);
  }
  if (!check(value)) throw new InputError(`${name} must be ${check.expected}.`, input);
  return value;
}
const isObject = Object.assign((v) => v !== null && typeof v === "object" && !Array.isArray(v), { expected: "a JSON object" });
const isArray = Object.assign((v) => Array.isArray(v), { expected: "a JSON array" });

function thinkingMode(model) {
  // "none" | "hybrid" | "always", from the model's capabilities in GET /models
  return state.models.get(model)?.capabilities?.thinking ?? "none";
}

function buildBody(newMessages) {
  const model = $("model").value;
  if (!model) throw new InputError("Choose a model first.", $("model"));
  const system = $("system").value.trim();
  const messages = [...(system ? [{ role: "system", content: system }] : []), ...state.history, ...newMessages];
  const body = { model, messages, stream: true, stream_options: { include_usage: true } };
  const mode = thinkingMode(model);
  if (mode === "hybrid") body.enable_thinking = $("thinking").checked;
  const thinks = mode === "always" || (mode === "hybrid" && $("thinking").checked);
  const budget = optionalInt($("thinking-budget"), "The thinking budget");
  if (budget !== undefined && thinks) body.thinking_budget = budget;
  const maxTokens = optionalInt($("max-tokens"), "Max answer tokens");
  if (maxTokens !== undefined) body.max_tokens = maxTokens;
  const schema = optionalJson($("schema"), "The JSON schema", isObject);
  if (schema) body.response_format = { type: "json_schema", json_schema: { name: "answer", schema, strict: true } };
  const tools = optionalJson($("tools"), "The tools", isArray);
  if (tools) body.tools = tools;
  if (tools && $("tool-choice").value !== "auto") body.tool_choice = $("tool-choice").value;
  return body;
}

async function newMessages(text) {
  if (state.pendingToolCalls.length) {
    // The previous answer called tools: the text typed is each call's result.
    return state.pendingToolCalls.map((call) => ({ role: "tool", tool_call_id: call.id, content: text }));
  }
  const file = $("image").files[0];
  if (!file || $("image").disabled) return [{ role: "user", content: text }];
  if (file.size > MAX_IMAGE_BYTES) throw new InputError("The image is larger than 10 MiB.", $("image"));
  const url = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new InputError("The image could not be read.", $("image")));
    reader.readAsDataURL(file);
  });
  return [{ role: "user", content: [{ type: "image_url", image_url: { url } }, { type: "text", text }] }];
}

// ---- the conversation ------------------------------------------------------------------------------
function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addUserTurn(messages) {
  const item = element("li", "turn user");
  item.append(element("h3", "who", messages[0].role === "tool" ? "Tool result" : "You"));
  const content = messages[0].content;
  for (const part of Array.isArray(content) ? content : [{ type: "text", text: content }]) {
    if (part.type === "image_url") {
      const img = element("img", "attached");
      img.src = part.image_url.url;
      img.alt = "the attached image";
      item.append(img);
    } else {
      item.append(element("div", "text", part.text));
    }
  }
  $("log").append(item);
}

class AssistantTurn {
  // One streamed answer: its thought apart from its text, tool calls, usage and timing.
  constructor(model) {
    this.item = element("li", "turn assistant");
    this.item.append(element("h3", "who", model));
    this.answer = element("div", "answer");
    this.item.append(this.answer);
    $("log").append(this.item);
    this.text = "";
    this.toolCalls = [];
    this.started = performance.now();
    this.firstTokenAt = null;
    this.usage = null;
  }

  onChunk(chunk) {
    if (chunk.usage) this.usage = chunk.usage;
    const delta = chunk.choices?.[0]?.delta;
    if (!delta) return;
    if (delta.reasoning_content || delta.content || delta.tool_calls) this.firstTokenAt ??= performance.now();
    if (delta.reasoning_content) this.reasoningBox().textContent += delta.reasoning_content;
    if (delta.content) {
      this.text += delta.content;
      this.answer.textContent = this.text;
    }
    for (const call of delta.tool_calls ?? []) this.addToolCallDelta(call);
  }

  reasoningBox() {
    if (!this.reasoning) {
      const box = element("details", "thinking");
      box.open = true;
      box.append(element("summary", "", "Thinking"));
      this.reasoning = element("div", "reasoning");
      box.append(this.reasoning);
      this.answer.before(box);
    }
    return this.reasoning;
  }

  addToolCallDelta(delta) {
    const call = (this.toolCalls[delta.index] ??= { id: "", type: "function", function: { name: "", arguments: "" } });
    if (delta.id) call.id = delta.id;
    if (delta.function?.name) call.function.name += delta.function.name;
    if (delta.function?.arguments) call.function.arguments += delta.function.arguments;
    this.toolBox ??= this.item.appendChild(element("pre", "tool-calls"));
    this.toolBox.textContent = this.toolCalls.map((c) => `${c.function.name}(${c.function.arguments})`).join("\n");
  }

  finish(note) {
    const ended = performance.now();
    const line = [];
    const u = this.usage;
    if (u) {
      const cached = u.prompt_tokens_details?.cached_tokens;
      const image = u.prompt_tokens_details?.image_tokens;
      const reasoning = u.completion_tokens_details?.reasoning_tokens;
      line.push(`prompt ${u.prompt_tokens}${cached !== undefined ? ` (cached ${cached})` : ""}${image ? ` (image ${image})` : ""}`);
      line.push(`completion ${u.completion_tokens}${reasoning !== undefined ? ` (reasoning ${reasoning})` : ""}`);
      line.push(`total ${u.total_tokens}`);
    }
    if (this.firstTokenAt !== null) {
      line.push(`TTFT ${Math.round(this.firstTokenAt - this.started)} ms`);
      const seconds = (ended - this.firstTokenAt) / 1000;
      if (u && seconds > 0) line.push(`${(u.completion_tokens / seconds).toFixed(1)} tokens/s`);
    }
    line.push(`${((ended - this.started) / 1000).toFixed(2)} s`);
    if (note) line.push(note);
    this.item.append(element("p", "usage", line.join(" · ")));
  }

  fail(message) {
    const error = element("p", "error", message);
    error.setAttribute("role", "alert");
    this.item.append(error);
  }

  message() {
    const message = { role: "assistant", content: this.text };
    if (this.toolCalls.length) message.tool_calls = this.toolCalls.filter(Boolean);
    return message;
  }
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("log").setAttribute("aria-busy", String(busy)); // screen readers read the answer once it is complete
}

async function send() {
  showFormError("");
  const prompt = $("prompt");
  const text = prompt.value.trim();
  if (!text) return;
  let body, messages;
  try {
    messages = await newMessages(text);
    body = buildBody(messages);
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    showFormError(err.message);
    err.input.focus();
    return;
  }
  state.lastBody = body;
  $("copy-curl").disabled = $("copy-python").disabled = false;
  addUserTurn(messages);
  prompt.value = "";
  $("image").value = "";
  const turn = new AssistantTurn(body.model);
  const epoch = state.epoch;
  state.controller = new AbortController();
  setBusy(true);
  let note = "";
  try {
    await streamChat(body, turn, state.controller.signal);
  } catch (err) {
    if (err.name === "AbortError") note = "stopped";
    else turn.fail(err instanceof TypeError ? `The server could not be reached: ${err.message}` : err.message);
  }
  setBusy(false);
  turn.finish(note);
  const failed = turn.item.querySelector(".error") !== null;
  if (!failed && epoch === state.epoch) {
    state.history.push(...messages, turn.message());
    setPendingToolCalls(turn.toolCalls.filter(Boolean));
  }
  prompt.focus();
}

function setPendingToolCalls(calls) {
  state.pendingToolCalls = calls;
  const names = calls.map((c) => c.function.name).join(", ");
  $("prompt-label").textContent = calls.length ? `Tool result for ${names}` : "Message";
}

function clearChat() {
  state.epoch += 1;
  state.controller?.abort();
  state.history = [];
  setPendingToolCalls([]);
  $("log").replaceChildren();
  showFormError("");
  $("prompt").focus();
}

function showFormError(message) {
  $("form-error").textContent = message;
}

// ---- models ----------------------------------------------------------------------------------------
async function loadModels() {
  $("model-info").textContent = "Loading models…";
  let models;
  try {
    models = await fetchModels();
  } catch (err) {
    $("model-info").textContent = `Models could not be listed: ${err.message}`;
    return;
  }
  state.models = new Map(models.map((m) => [m.id, m]));
  const select = $("model");
  const wanted = select.value || sessionStorage.getItem(MODEL_ITEM);
  const groups = [element("optgroup"), element("optgroup")];
  groups[0].label = "Models";
  groups[1].label = "Aliases";
  for (const m of models) {
    const option = element("option", "", m.id === m.root ? m.id : `${m.id} → ${m.root}`);
    option.value = m.id;
    groups[m.id === m.root ? 0 : 1].append(option);
  }
  select.replaceChildren(...groups.filter((g) => g.children.length));
  if (wanted && state.models.has(wanted)) select.value = wanted;
  onModelChange();
}

function onModelChange() {
  const model = state.models.get($("model").value);
  if (!model) return;
  sessionStorage.setItem(MODEL_ITEM, model.id);
  const caps = model.capabilities;
  const thinking = $("thinking");
  thinking.disabled = caps.thinking !== "hybrid";
  thinking.checked = caps.thinking === "always" || (caps.thinking === "hybrid" && caps.thinking_default);
  $("thinking-budget").disabled = caps.thinking === "none";
  $("image").disabled = !caps.vision;
  $("image-help").textContent = caps.vision ? "Sent as a data: URI, at most 10 MiB." : "This model does not read images.";
  const thinkingText = { none: "no thinking", hybrid: "thinking can be switched", always: "always thinks" }[caps.thinking];
  $("model-info").textContent =
    `${model.root} · ${caps.family} · ${thinkingText} · ${caps.vision ? "reads images" : "text only"} · ` +
    `context ${caps.context_length} tokens`;
}

// ---- the last request as code (wire.js writes it) --------------------------------------------------
async function copySnippet(kind) {
  const base = location.origin + API;
  const text = kind === "curl" ? curlSnippet(`${base}/chat/completions`, state.lastBody) : pythonSnippet(base, state.lastBody);
  const box = $("snippet");
  box.value = text;
  try {
    await navigator.clipboard.writeText(text);
    $("status").textContent = `Copied the ${kind} code.`;
  } catch {
    box.select();
    $("status").textContent = `The browser refused the clipboard: the ${kind} code is selected below.`;
  }
}

// ---- wiring ----------------------------------------------------------------------------------------
function wire() {
  $("api-key").addEventListener("change", () => {
    saveKey();
    loadModels();
  });
  $("remember-key").addEventListener("change", saveKey);
  $("settings").addEventListener("submit", (event) => {
    event.preventDefault(); // Enter in a settings field: keep the key and list the models again
    saveKey();
    loadModels();
  });
  $("reload-models").addEventListener("click", loadModels);
  $("model").addEventListener("change", onModelChange);
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (!$("send").disabled) $("composer").requestSubmit();
    } else if (event.key === "Escape") {
      state.controller?.abort(); // stops the answer being streamed, if any
    }
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("clear").addEventListener("click", clearChat);
  $("copy-curl").addEventListener("click", () => copySnippet("curl"));
  $("copy-python").addEventListener("click", () => copySnippet("python"));
}

loadKey();
wire();
loadModels();
