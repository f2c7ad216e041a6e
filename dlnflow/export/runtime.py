'''The fixed part of an exported DSPy program: rendering, reading answers, the engine and the adapter.

:mod:`dlnflow.export.program` writes ``program.py`` as the network's data (instructions,
layers, models) followed by :data:`RENDERING` and :data:`RUNTIME`, then the signatures, the
module and a command line. The text here only uses the standard library and ``dspy``, so the
exported program runs where dlnflow is not installed.

:data:`RENDERING` needs nothing but the standard library; the exporter runs it on sample
inputs and compares it with dlnflow's own templates before it writes anything
(:func:`dlnflow.export.to_dspy.check_rendering`), so what ships is what was checked.
'''

from __future__ import annotations

RENDERING = '''
# -- rendering and reading, as dlnflow does (standard library only) ---------------------------
def render_prompt(layer: str, values: dict[str, Any], instruction: str) -> str:
    """The text dlnflow's forward template makes of ``instruction`` and the layer's inputs.

    ``values`` maps dlnflow's input names (``x`` and layer names) to their texts.
    """
    spec = LAYERS[layer]
    out: list[str] = []
    for part in spec["template"]:
        kind = part[0]
        if kind == "text":
            out.append(part[1])
        elif kind == "prompt":
            out.append(instruction)
        elif kind == "value":
            out.append(str(values[part[1]]))
        else:  # "inputs": one labelled line per input, in the layer's order
            for name in spec["inputs"]:
                label = "Input" if name == "x" else name.replace("_", " ").capitalize()
                out.append(f"{label}: {values[name]}\\n")
    return "".join(out)


def read_label(text: str, classes: Sequence[str]) -> str | None:
    """The class a completion starts with (exact case first, then ignoring case), or None.

    A class only counts when no letter or digit follows it ("blue" is not read from "blueberry").
    """
    head = text.lstrip()
    ordered = sorted(classes, key=len, reverse=True)
    for fold in (False, True):
        probe = head.casefold() if fold else head
        for label in ordered:
            want = label.casefold() if fold else label
            rest = probe[len(want):len(want) + 1]
            if probe.startswith(want) and not rest.isalnum():
                return label
    return None


def best_class(table: dict[str, float], classes: Sequence[str], loose: bool = False) -> str | None:
    """The most probable class among a first token's alternatives, as dlnflow's next-token scoring.

    A class is the token " <class>" (a completion puts a space before the answer); ``loose``
    also accepts tokens that equal a class once stripped (chat replies start without the
    space). Classes missing from the table are left out; None when none is there.
    """
    stripped: dict[str, float] = {}
    for token, logprob in table.items():
        stripped.setdefault(token.strip(), logprob)
    best, best_logprob = None, float("-inf")
    for label in classes:
        logprob = table.get(" " + label)
        if logprob is None and loose:
            logprob = stripped.get(label)
        if logprob is not None and logprob > best_logprob:
            best, best_logprob = label, logprob
    return best
'''

RUNTIME = '''
# -- the engine: the prompt goes to the server exactly as rendered ----------------------------
class CompletionsEngine:
    """A DSPy engine that posts each prompt unchanged to an OpenAI-compatible server.

    DSPy's own text mode appends a marker to every prompt; dlnflow's prompts were learned
    without it, so this engine sends the text as it is: to ``/completions`` (or, when the
    spec's model used ``chat: true``, as the one user message of ``/chat/completions``).
    DSPy keeps its cache, retries, history and callbacks around it.
    """

    def __init__(self, api_base: str, model: str, api_key: str = "no-key-needed", chat: bool = False,
                 extra_body: dict[str, Any] | None = None, timeout: float = 60.0) -> None:
        self.api_base = api_base.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.chat = chat
        self.extra_body = dict(extra_body or {})
        self.timeout = timeout

    def dump_state(self) -> dict[str, Any]:
        """What DSPy saves with an LM (never the key)."""
        return {"api_base": self.api_base, "model": self.model, "chat": self.chat,
                "extra_body": self.extra_body, "timeout": self.timeout}

    @classmethod
    def load_state(cls, state: dict[str, Any]) -> CompletionsEngine:
        return cls(**state)

    def complete(self, request: Any) -> Any:
        config = request.config
        body: dict[str, Any] = {"model": self.model, **self.extra_body}
        for key in ("max_tokens", "temperature", "top_p"):
            if getattr(config, key) is not None:
                body[key] = getattr(config, key)
        if config.stop:
            body["stop"] = list(config.stop)
        if self.chat:
            body["messages"] = [{"role": "user", "content": _request_text(request)}]
            if config.logprobs is not None:
                body.update(logprobs=True, top_logprobs=config.logprobs)
            return lm15.response_from_openai_chat(self._post("/chat/completions", body), model=request.model)
        body["prompt"] = _request_text(request)
        if config.logprobs is not None:
            body["logprobs"] = config.logprobs
        data = self._post("/completions", body)
        return lm15.response_from_openai_chat(_as_chat(data, scoring=config.max_tokens == 1
                                                       and config.logprobs is not None), model=request.model)

    def stream(self, request: Any) -> Any:
        raise lm15.UnsupportedFeatureError("the dlnflow export engine does not stream")

    def close(self) -> None:
        pass

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.api_base + path
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}
        request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return dict(json.loads(response.read().decode("utf-8")))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:300]
            kind = (lm15.RateLimitError if exc.code == 429 else lm15.ServerError if exc.code >= 500
                    else lm15.AuthError if exc.code in (401, 403) else lm15.InvalidRequestError)
            raise kind(f"{url} answered HTTP {exc.code}: {detail}", status=exc.code) from None
        except TimeoutError:
            raise lm15.TimeoutError(f"{url} did not answer within {self.timeout:g} s") from None
        except urllib.error.URLError as exc:
            raise lm15.TransportError(f"cannot reach {url}: {exc.reason}") from None


class AsyncCompletionsEngine:
    """The same engine for DSPy's async calls (each request runs in a worker thread)."""

    def __init__(self, engine: CompletionsEngine) -> None:
        self.engine = engine

    async def complete(self, request: Any) -> Any:
        return await asyncio.to_thread(self.engine.complete, request)

    async def stream(self, request: Any) -> Any:
        raise lm15.UnsupportedFeatureError("the dlnflow export engine does not stream")

    async def aclose(self) -> None:
        pass


def _request_text(request: Any) -> str:
    """The prompt: the one message dlnflow's adapter sends (other adapters' messages are joined)."""
    texts = []
    if request.system is not None:
        system = request.system
        texts.append(system if isinstance(system, str) else "".join(getattr(p, "text", "") for p in system))
    texts.extend(message.text or "" for message in request.messages)
    return "\\n\\n".join(texts)


def _as_chat(data: dict[str, Any], scoring: bool) -> dict[str, Any]:
    """A completions answer in the chat shape DSPy reads, next-token alternatives included.

    A scoring call asks for one token on purpose, so its end is reported as a normal stop.
    """
    choice = (data.get("choices") or [{}])[0]
    logprobs = choice.get("logprobs") or {}
    content = [
        {"token": token, "logprob": logprob, "bytes": None,
         "top_logprobs": [{"token": k, "logprob": v, "bytes": None} for k, v in (top or {}).items()]}
        for token, logprob, top in zip(logprobs.get("tokens") or [], logprobs.get("token_logprobs") or [],
                                       logprobs.get("top_logprobs") or [], strict=False)
    ]
    finish = choice.get("finish_reason") or "stop"
    message = {"role": "assistant", "content": choice.get("text") or ""}
    out = {"index": 0, "message": message, "finish_reason": "stop" if scoring else finish}
    if content:
        out["logprobs"] = {"content": content}
    return {**{k: v for k, v in data.items() if k != "choices"}, "object": "chat.completion", "choices": [out]}


def make_lm(api_base: str | None = None, model: str | None = None, *, spec_model: str = DEFAULT_MODEL,
            api_key: str | None = None, **kwargs: Any) -> dspy.LM:
    """A ``dspy.LM`` that reaches the spec's model on an OpenAI-compatible server.

    ``api_base`` defaults to the spec's ``base_url`` (else ``DEFAULT_API_BASE``), ``model`` to
    the name the spec gives it, the key to the spec's ``api_key_env`` variable. Greedy decoding
    by default; ``kwargs`` go to ``dspy.LM`` (``cache=False``, ``num_retries=...``).
    """
    settings = MODELS[spec_model]
    key = api_key or os.environ.get(settings["api_key_env"] or "", "") or "no-key-needed"
    engine = CompletionsEngine(api_base or settings["base_url"] or DEFAULT_API_BASE, model or settings["model"],
                               key, chat=settings["chat"], extra_body=settings["extra_body"],
                               timeout=settings["timeout"])
    options = {"temperature": 0.0, "max_tokens": MAX_TOKENS, "num_retries": settings["max_retries"], **kwargs}
    return dspy.LM(f"openai/{engine.model}", model_type="text", engine=engine,
                   async_engine=AsyncCompletionsEngine(engine), **options)


# -- the adapter: dlnflow's templates instead of DSPy's chat formats --------------------------
def layer_of(signature: Any) -> str:
    """The layer a signature belongs to: the one whose output field it has."""
    names = list(signature.output_fields)
    for layer, spec in LAYERS.items():
        if names == [spec["field"]]:
            return layer
    raise ValueError(f"signature with outputs {names} is not a layer of {NAME!r}")


def instruction_of(layer: str, signature: Any) -> str:
    """The exported instruction, exactly (DSPy tidies whitespace and fills empty ones), unless changed."""
    if signature.instructions == SIGNATURES[layer].instructions:
        return INSTRUCTIONS[layer]
    return str(signature.instructions)


class DlnflowAdapter(dspy.Adapter):
    """Renders each layer's prompt as dlnflow's forward template does and reads answers as dlnflow.

    A hidden layer's answer is its completion, stripped. A classifier is scored as dlnflow
    scores it on an OpenAI-compatible server: one next token with its most likely
    alternatives, the most probable class wins; classes that share their first characters
    (``(A)``, ``(B)``) are read from the start of a short greedy completion instead.
    """

    def __call__(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: list[dict[str, Any]],
                 inputs: dict[str, Any]) -> list[dict[str, Any]]:
        return super().__call__(lm, self.decoding(layer_of(signature), lm_kwargs), signature, demos, inputs)

    async def acall(self, lm: Any, lm_kwargs: dict[str, Any], signature: Any, demos: list[dict[str, Any]],
                    inputs: dict[str, Any]) -> list[dict[str, Any]]:
        return await super().acall(lm, self.decoding(layer_of(signature), lm_kwargs), signature, demos, inputs)

    @staticmethod
    def decoding(layer: str, lm_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The layer's decoding settings; settings given to the call override them."""
        spec = LAYERS[layer]
        settings = dict(spec["decoding"])
        if spec["read"] == "score":
            settings.update(logprobs=True, top_logprobs=MODELS[spec["model"]]["top_logprobs"])
        return {**settings, **lm_kwargs}

    def format(self, signature: Any, demos: list[dict[str, Any]], inputs: dict[str, Any]) -> list[dict[str, Any]]:
        if demos:
            raise ValueError("dlnflow's templates have no place for demos; use DSPy's own adapter "
                             "(use_dspy_adapter=True) to run a program with demos")
        layer = layer_of(signature)
        values = {name: inputs[field] for name, field in LAYERS[layer]["inputs"].items()}
        return [{"role": "user", "content": render_prompt(layer, values, instruction_of(layer, signature))}]

    def parse(self, signature: Any, completion: str) -> dict[str, Any]:
        spec = LAYERS[layer_of(signature)]
        if spec["classes"] is None:
            return {spec["field"]: completion.strip()}
        label = read_label(completion, spec["classes"])
        if label is None:
            raise AdapterParseError(adapter_name="DlnflowAdapter", signature=signature, lm_response=completion,
                                    message="the completion does not start with one of the classes "
                                    + ", ".join(spec["classes"]))
        return {spec["field"]: label}

    def _call_postprocess(self, processed_signature: Any, original_signature: Any, outputs: list[Any], lm: Any,
                          lm_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        """One value per output. An empty hidden text stays empty (DSPy would call it a failure)."""
        spec = LAYERS[layer_of(original_signature)]
        values = []
        for output in outputs:
            text = (output.get("text") or "") if isinstance(output, dict) else str(output)
            if spec["read"] != "score":
                values.append(self.parse(original_signature, text))
                continue
            table = _first_token_table(output.get("logprobs") if isinstance(output, dict) else None)
            classes = spec["classes"]
            label = best_class(table, classes, MODELS[spec["model"]]["chat"]) or read_label(text, classes)
            if label is None:
                offered = ", ".join(repr(token) for token in list(table)[:8]) or "none"
                raise AdapterParseError(
                    adapter_name="DlnflowAdapter", signature=original_signature, lm_response=text,
                    message=f"no class is among the next-token alternatives the server returned ({offered})")
            values.append({spec["field"]: label})
        return values


def _first_token_table(logprobs: Any) -> dict[str, float]:
    """Token text -> logprob of the first generated token's alternatives (empty when absent)."""
    content = (logprobs or {}).get("content") if isinstance(logprobs, dict) else None
    if not content:
        return {}
    return {str(item["token"]): float(item["logprob"]) for item in content[0].get("top_logprobs") or []}
'''
