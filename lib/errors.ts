/**
 * Errors a user can cause and fix. The CLI prints their message as one line
 * and exits non-zero; anything else is a bug and keeps its stack trace.
 *
 * @module
 */

/** Base class: `message` is a complete sentence that says what to do. */
export class UserError extends Error {
  override name = "UserError";
}

/** A config file is unreadable or holds a wrong value; names file and key. */
export class ConfigError extends UserError {
  override name = "ConfigError";
  constructor(readonly file: string, readonly key: string, problem: string) {
    super(key ? `${file}: ${key}: ${problem}` : `${file}: ${problem}`);
  }
}

/** The process lacks a privilege it needs (root or CAP_NET_ADMIN). */
export class PermissionError extends UserError {
  override name = "PermissionError";
}

/** A system call failed; `code` is the errno name (`"ENODEV"`). */
export class SystemError extends Error {
  override name = "SystemError";
  constructor(readonly call: string, readonly errno: number, readonly code: string, detail = "") {
    super(`${call} failed: ${code}${detail ? ` (${detail})` : ""}`);
  }
}
