// Lints Cypher statements with Neo4j's own front-end (@neo4j-cypher/language-support).
//
// stdin: either a bare JSON array of statements
//     [{"name": str, "query": str, "parameters": {name: example value}}, ...]
// or an envelope that also describes the database
//     {"schema": {"labels": [...], "relationshipTypes": [...], "propertyKeys": [...],
//                 "parameters": {...}}, "statements": [...]}
// stdout: [{"name": str, "diagnostics": [{"message", "severity", "range", "offsets"}]}, ...]
//
// Every diagnostic counts, warnings included: the caller fails on any. Why the schema matters:
// - a `$param` is an Error unless it is a key of `parameters` (its value only needs to be
//   non-undefined, so JSON null works as an example value);
// - unknown labels/relationship types in read patterns warn only when BOTH `labels` and
//   `relationshipTypes` are given; unknown property keys warn only when `propertyKeys` is given
//   (properties the statement itself writes are exempt). The checker also takes `row.key` inside a
//   MATCH pattern's map, `MATCH (d {id: row.key})`, for a property of `d`, so the keys of the
//   statement's example parameters (maps at any depth) count as known property keys;
// - functions and procedures are checked only when the schema carries them (we do not).
// So an envelope without labels/relationshipTypes/propertyKeys checks syntax and semantics only.
//
// Cost: loading the front-end takes ~1 s and its semantic analysis ~40-100 ms per statement, so
// one process lints all statements, and large batches are split over worker threads, one per
// core (CYPHER_LINT_WORKERS overrides the count; 1 lints inline).

import { availableParallelism } from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

// Below this many statements per worker, a worker's own ~1 s start-up costs more than it saves.
const MIN_STATEMENTS_PER_WORKER = 12;

const SEVERITY = { 1: 'Error', 2: 'Warning', 3: 'Information', 4: 'Hint' };
const SCHEMA_LISTS = ['labels', 'relationshipTypes', 'propertyKeys'];

function readStdin() {
  const chunks = [];
  return new Promise((resolve, reject) => {
    process.stdin.on('data', (chunk) => chunks.push(chunk));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

function parseInput(text) {
  const input = JSON.parse(text);
  if (Array.isArray(input)) return { schema: {}, statements: input };
  if (input && Array.isArray(input.statements)) {
    return { schema: input.schema ?? {}, statements: input.statements };
  }
  throw new Error('stdin must be a JSON array of statements or {"schema": {...}, "statements": [...]}');
}

function baseSchema(schema) {
  const dbSchema = {};
  for (const key of SCHEMA_LISTS) {
    if (schema[key] !== undefined && schema[key] !== null) {
      if (!Array.isArray(schema[key])) throw new Error(`schema.${key} must be a list of strings`);
      dbSchema[key] = schema[key];
    }
  }
  return dbSchema;
}

function mapKeys(value, keys = new Set()) {
  if (Array.isArray(value)) {
    value.forEach((item) => mapKeys(item, keys));
  } else if (value !== null && typeof value === 'object') {
    for (const [key, item] of Object.entries(value)) {
      keys.add(key);
      mapKeys(item, keys);
    }
  }
  return keys;
}

function lintOne(lintCypherQuery, statement, dbSchema, sharedParameters) {
  if (typeof statement?.name !== 'string' || typeof statement?.query !== 'string') {
    throw new Error(`each statement needs a string "name" and "query": ${JSON.stringify(statement)}`);
  }
  const parameters = { ...sharedParameters, ...(statement.parameters ?? {}) };
  const schema = { ...dbSchema, parameters };
  if (dbSchema.propertyKeys) {
    schema.propertyKeys = [...new Set([...dbSchema.propertyKeys, ...mapKeys(parameters)])];
  }
  const { diagnostics } = lintCypherQuery(statement.query, schema);
  return {
    name: statement.name,
    diagnostics: diagnostics.map((d) => ({
      message: d.message,
      severity: SEVERITY[d.severity] ?? String(d.severity),
      range: d.range,
      offsets: d.offsets,
    })),
  };
}

async function lintAll(statements, dbSchema, sharedParameters) {
  // Imported lazily so that a main thread that only farms out work never pays for loading it.
  const { lintCypherQuery } = await import('@neo4j-cypher/language-support');
  return statements.map((s) => lintOne(lintCypherQuery, s, dbSchema, sharedParameters));
}

function workerCount(nStatements) {
  const forced = Number.parseInt(process.env.CYPHER_LINT_WORKERS ?? '', 10);
  const cap = forced > 0 ? forced : availableParallelism();
  return Math.max(1, Math.min(cap, Math.floor(nStatements / MIN_STATEMENTS_PER_WORKER)));
}

function runWorker(statements, dbSchema, sharedParameters) {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), {
      workerData: { statements, dbSchema, sharedParameters },
    });
    worker.once('message', resolve);
    worker.once('error', reject);
    worker.once('exit', (code) => {
      if (code !== 0) reject(new Error(`lint worker exited with code ${code}`));
    });
  });
}

async function lintInParallel(statements, dbSchema, sharedParameters) {
  const n = workerCount(statements.length);
  if (n === 1) return lintAll(statements, dbSchema, sharedParameters);
  const size = Math.ceil(statements.length / n);
  const slices = [];
  for (let i = 0; i < statements.length; i += size) slices.push(statements.slice(i, i + size));
  const results = await Promise.all(slices.map((s) => runWorker(s, dbSchema, sharedParameters)));
  return results.flat();
}

async function main() {
  const { schema, statements } = parseInput(await readStdin());
  const results = await lintInParallel(statements, baseSchema(schema), schema.parameters ?? {});
  process.stdout.write(JSON.stringify(results));
}

if (isMainThread) {
  main().catch((error) => {
    process.stderr.write(`cypher_lint: ${error.message}\n`);
    process.exit(2);
  });
} else {
  const { statements, dbSchema, sharedParameters } = workerData;
  parentPort.postMessage(await lintAll(statements, dbSchema, sharedParameters));
}
