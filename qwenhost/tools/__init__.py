"""Server-side tools the model calls and the server runs: web search (search/) and the code interpreter's
sandbox (sandbox/). An inner layer: core and third-party only; the service's tool loop meets them."""
