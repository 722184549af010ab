// `js-keyed`: a full snapshot of keyed and operator state, written in JavaScript and built
// with componentize-js (SpiderMonkey) with its default features, so `console.log` works:
// it lands in the host's log.
//
// Format `js-keyed`, version 1 (little-endian):
//
//   stream   := header group*                      one group per key group, ascending
//   header   := "SHJS" u16:format-version
//   group    := u32:key-group section* u8:0         offset of group recorded by the host
//   section  := u8:1 bytes:state-name u8:kind batch* u32:0
//   batch    := u32:count lengths{count} data
//   lengths  := u32:key u32:namespace u32:user-key u32:value
//   data     := the parts of every entry, concatenated in entry order
//   bytes    := u32:length byte{length}
//
// Operator state (same header): `element := u32:length byte{length}`, one per element, each
// marked as a partition by the host.
//
// On snapshot the entries' bytes never enter JavaScript (`nextBatchLengths` + `writePending`);
// on restore a batch's bytes go back to the host in one `put`.

const MAGIC = [0x53, 0x48, 0x4a, 0x53]; // "SHJS"
const FORMAT_VERSION = 1;
const SECTION = 1;
const END = 0;
const BATCH_BYTES = 256 * 1024;
const BUFFER_SIZE = 64 * 1024;
const READ_CHUNK = 1 << 20;
const MAX_BATCH_ENTRIES = 1 << 24;
const KINDS = ["value", "list", "map"];

// A failure of the strategy: thrown as a string, which becomes the call's error result.
class StrategyError extends Error {}

function hostCall(fn) {
  try {
    return fn();
  } catch (e) {
    const payload = e && e.payload !== undefined ? e.payload : e;
    const text = payload && payload.message !== undefined ? `${payload.kind}: ${payload.message}` : String(payload);
    throw new StrategyError(text);
  }
}

// Buffered writer over the host's output stream: one host call per 64 KiB.
class Writer {
  constructor(stream) {
    this.stream = stream;
    this.buffer = new Uint8Array(BUFFER_SIZE);
    this.view = new DataView(this.buffer.buffer);
    this.length = 0;
  }
  reserve(n) {
    if (this.length + n > BUFFER_SIZE) this.flush();
  }
  bytes(data) {
    if (data.length >= BUFFER_SIZE) {
      this.flush();
      hostCall(() => this.stream.write(data));
      return;
    }
    this.reserve(data.length);
    this.buffer.set(data, this.length);
    this.length += data.length;
  }
  u8(v) {
    this.reserve(1);
    this.buffer[this.length++] = v;
  }
  u16(v) {
    this.reserve(2);
    this.view.setUint16(this.length, v, true);
    this.length += 2;
  }
  u32(v) {
    this.reserve(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  lengthPrefixed(data) {
    this.u32(data.length);
    this.bytes(data);
  }
  flush() {
    if (this.length > 0) {
      const chunk = this.buffer.slice(0, this.length);
      hostCall(() => this.stream.write(chunk));
      this.length = 0;
    }
  }
  beginKeyGroup(kg) {
    this.flush();
    hostCall(() => this.stream.beginKeyGroup(kg));
  }
  beginPartition(state) {
    this.flush();
    hostCall(() => this.stream.beginPartition(state));
  }
  writePending(reader) {
    this.flush();
    hostCall(() => this.stream.writePending(reader));
  }
}

// Buffered reader over the host's input stream.
class Reader {
  constructor(stream) {
    this.stream = stream;
    this.buffer = new Uint8Array(0);
    this.at = 0;
  }
  position() {
    return Number(this.stream.position()) - (this.buffer.length - this.at);
  }
  exact(n) {
    const available = this.buffer.length - this.at;
    if (n <= available) {
      const out = this.buffer.subarray(this.at, this.at + n);
      this.at += n;
      return out;
    }
    const out = new Uint8Array(n);
    out.set(this.buffer.subarray(this.at), 0);
    let filled = available;
    this.buffer = new Uint8Array(0);
    this.at = 0;
    while (filled < n) {
      const missing = n - filled;
      // At most 1 MiB per call: a huge value is read into its final buffer piece by piece
      // instead of arriving whole and being copied once more.
      const chunk = hostCall(() => this.stream.read(Math.min(Math.max(missing, BUFFER_SIZE), READ_CHUNK)));
      if (chunk.length === 0) throw new StrategyError(`unexpected end of snapshot: ${missing} of ${n} bytes missing`);
      const used = Math.min(missing, chunk.length);
      out.set(chunk.subarray(0, used), filled);
      filled += used;
      if (used < chunk.length) {
        this.buffer = chunk;
        this.at = used;
      }
    }
    return out;
  }
  u8() {
    return this.exact(1)[0];
  }
  u16() {
    const b = this.exact(2);
    return b[0] | (b[1] << 8);
  }
  u32() {
    const b = this.exact(4);
    return (b[0] | (b[1] << 8) | (b[2] << 16) | (b[3] << 24)) >>> 0;
  }
  lengthPrefixed(limit) {
    const n = this.u32();
    if (n > limit) throw new StrategyError(`length ${n} exceeds the limit of ${limit} bytes (corrupted snapshot?)`);
    return this.exact(n);
  }
}

function dispose(resource) {
  const d = resource && resource[Symbol.dispose];
  if (typeof d === "function") d.call(resource);
}

function guarded(body) {
  try {
    body();
  } catch (e) {
    if (e instanceof StrategyError) throw e.message;
    throw `${e && e.name ? e.name : "Error"}: ${e && e.message !== undefined ? e.message : String(e)}`;
  }
}

function header(out) {
  out.bytes(Uint8Array.from(MAGIC));
  out.u16(FORMAT_VERSION);
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export function describe() {
  return { name: "js-keyed", version: "0.1.0", format: "js-keyed", formatVersion: FORMAT_VERSION, deterministic: true };
}

export function snapshotKeyed(state, stream) {
  guarded(() => {
    const out = new Writer(stream);
    header(out);
    const range = state.keyGroupRange();
    const states = state.states();
    console.log(`js-keyed: snapshot of key groups ${range.start}..=${range.end}, ${states.length} states`);
    for (let kg = range.start; kg <= range.end; kg++) {
      out.beginKeyGroup(kg);
      out.u32(kg);
      for (let index = 0; index < states.length; index++) {
        const entries = hostCall(() => state.entries(index, kg));
        let lengths = entries.nextBatchLengths(BATCH_BYTES);
        if (lengths !== undefined) {
          out.u8(SECTION);
          out.lengthPrefixed(encoder.encode(states[index].name));
          out.u8(KINDS.indexOf(states[index].kind));
          while (lengths !== undefined) {
            out.u32(lengths.length);
            // All of a batch's lengths in one array and one write (wasm is little-endian).
            const packed = new Uint32Array(4 * lengths.length);
            for (let i = 0, j = 0; i < lengths.length; i++, j += 4) {
              const e = lengths[i];
              packed[j] = e.key;
              packed[j + 1] = e.namespace;
              packed[j + 2] = e.userKey;
              packed[j + 3] = e.value;
            }
            out.bytes(new Uint8Array(packed.buffer));
            out.writePending(entries);
            lengths = entries.nextBatchLengths(BATCH_BYTES);
          }
          out.u32(0);
        }
        dispose(entries);
      }
      out.u8(END);
    }
    out.flush();
  });
}

export function restoreKeyGroup(keyGroup, stream, sink) {
  guarded(() => {
    const input = new Reader(stream);
    const at = input.position();
    const found = input.u32();
    if (found !== keyGroup) {
      throw new StrategyError(
        `unexpected key group at offset ${at}: expected ${keyGroup}, found ${found} (wrong offsets or a corrupted snapshot)`,
      );
    }
    for (;;) {
      const marker = input.u8();
      if (marker === END) return;
      if (marker !== SECTION) throw new StrategyError(`key group ${keyGroup} at offset ${at}: unknown section marker ${marker}`);
      let name;
      try {
        name = decoder.decode(input.lengthPrefixed(1 << 20));
      } catch (e) {
        if (e instanceof StrategyError) throw e;
        throw new StrategyError(`key group ${keyGroup} at offset ${at}: state name is not UTF-8`);
      }
      const code = input.u8();
      if (code >= KINDS.length) throw new StrategyError(`unknown state kind code ${code} (corrupted snapshot?)`);
      const index = hostCall(() => sink.state(name, KINDS[code]));
      for (let count = input.u32(); count !== 0; count = input.u32()) {
        if (count > MAX_BATCH_ENTRIES) throw new StrategyError(`state ${name}: batch of ${count} entries exceeds ${MAX_BATCH_ENTRIES}`);
        // An aligned copy, so the lengths read as a Uint32Array (wasm is little-endian).
        const raw = new Uint32Array(input.exact(16 * count).slice().buffer);
        const entries = new Array(count);
        let total = 0;
        for (let i = 0, j = 0; i < count; i++, j += 4) {
          const key = raw[j], namespace = raw[j + 1], userKey = raw[j + 2], value = raw[j + 3];
          total += key + namespace + userKey + value;
          entries[i] = { key, namespace, userKey, value };
        }
        hostCall(() => sink.put(index, { data: input.exact(total), entries }));
      }
    }
  });
}

export function snapshotOperator(state, stream) {
  guarded(() => {
    const out = new Writer(stream);
    header(out);
    const states = state.states();
    for (let index = 0; index < states.length; index++) {
      const reader = hostCall(() => state.elements(index));
      for (let batch = reader.nextBatch(BATCH_BYTES); batch !== undefined; batch = reader.nextBatch(BATCH_BYTES)) {
        let at = 0;
        for (let i = 0; i < batch.lengths.length; i++) {
          const n = batch.lengths[i];
          out.beginPartition(index);
          out.lengthPrefixed(batch.data.subarray(at, at + n));
          at += n;
        }
      }
      dispose(reader);
    }
    out.flush();
  });
}

export function restoreOperatorPartition(name, mode, stream, sink) {
  guarded(() => {
    const input = new Reader(stream);
    const at = input.position();
    let element;
    try {
      element = input.lengthPrefixed(1 << 30).slice();
    } catch (e) {
      throw new StrategyError(`operator state ${name}: element at offset ${at}: ${e.message}`);
    }
    hostCall(() => sink.add(name, mode, { data: element, lengths: [element.length] }));
  });
}
