// SPDX-License-Identifier: Apache-2.0
// One readable line from whatever was thrown: an Error's message, the response
// kubernetes-fluent-client throws (it throws the HTTP response, not an Error), or any other
// value as JSON, so a log never says "[object Object]".

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  const response = error as {
    status?: number;
    statusText?: string;
    data?: { message?: string } | string;
  };
  if (response && typeof response === "object" && "status" in response) {
    const detail = typeof response.data === "string" ? response.data : response.data?.message;
    const head = [response.status, response.statusText].filter(Boolean).join(" ");
    return `${head}${detail ? `: ${detail}` : ""}`;
  }
  if (error && typeof error === "object") {
    try {
      return JSON.stringify(error);
    } catch {
      // A cycle: fall through to String().
    }
  }
  return String(error);
}
