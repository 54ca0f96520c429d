/**
 * What a fuzz target is, and the checks every target shares: a parser may
 * fail only with a one-line {@linkcode VoltError} of an expected kind, and
 * may read only inside its input, a bounded number of times.
 */

import type fc from "fast-check";
import type { Image } from "../../src/boot/image.ts";
import { bytesImage } from "../../src/boot/image.ts";
import { type ErrorKind, VoltError } from "../../src/errors.ts";

/** A fuzz target: an arbitrary and a check that throws when its property fails. */
export interface Target<T = unknown> {
  name: string;
  /** What it checks, one line. */
  about: string;
  arbitrary: fc.Arbitrary<T>;
  /** Throws when the property does not hold for `value`. */
  check(value: T): void;
}

/** Types a target's check against its arbitrary, then erases the type for the list. */
export const defineTarget = <T>(t: Target<T>): Target => t as Target;

/** Rethrows `e` unless it is a one-line VoltError of one of `kinds`. */
export function expectVoltError(e: unknown, kinds: ErrorKind[] = ["input"]): void {
  if (!(e instanceof VoltError)) throw e;
  if (!kinds.includes(e.kind)) throw new Error(`VoltError of kind ${e.kind}: ${e.message}`);
  // A name from the input must not break the message over lines.
  if (/[\n\r]/.test(e.message)) throw new Error(`Not one line: ${JSON.stringify(e.message)}`);
}

/** An image that fails the property when a parser reads outside it or reads without bound. */
export function strictImage(name: string, bytes: Uint8Array): Image & { read: number } {
  const inner = bytesImage(name, bytes);
  const img = {
    name,
    size: bytes.length,
    read: 0,
    readAt(offset: number, dest: Uint8Array) {
      inner.readAt(offset, dest);
      img.read += dest.length;
      // Headers, notes and segments each read once: never more than the file twice over.
      if (img.read > 2 * bytes.length + 4096) throw new Error(`Read ${img.read} bytes`);
    },
    close() {},
  };
  return img;
}

/** A non-negative integer a Number holds exactly. */
export const safe = (n: number): boolean => Number.isSafeInteger(n) && n >= 0;
