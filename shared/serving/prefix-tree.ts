/**
 * The job executor's prompt tree (DeepFlow §5.2: one global prompt tree per TE type, as in Preble,
 * SGLang and MemServe): which instances hold which prompt prefixes in their KV cache, so the
 * scheduler can send a request where its prefix is cached. Pure data structure, no I/O; the
 * JobExecutor keeps it in memory and may snapshot it with `toJSON()` / `fromJSON()`.
 *
 * Nodes are spans of full KV blocks named by the engine's chained key of their last block
 * (`blockKey` in ../engine/kv-block-manager.ts, rooted at the request's cache salt), so each edge
 * is one span (`DEFAULT_PREFIX_INDEX_TOKENS`, a setting) and a key names a whole prefix: the tree
 * speaks the same keys as the instances' KvBlockManagers. It is soft state (DeepFlow §7): it may
 * forget (LRU bound, evictions) or be stale; that costs locality, never correctness.
 *
 * Invariants (checked by `checkInvariants`): every node has at least one holder, and a child's
 * holders are a subset of its parent's (an instance that holds a block holds its whole prefix,
 * which is what prefix reuse needs). So an instance's match is the depth of the deepest node on
 * the prompt's path that it holds.
 *
 * LRU: `insert` touches every node of the path with `now` (parents before children, each touch
 * also taking a tick, so the order is total). When the tree has more than `maxNodes` nodes, the
 * least recently touched leaves go first, all their holders with them.
 */
import { assert } from "../assert.ts";
import { blockKey } from "../block-key.ts";

/** About 43 bytes per node in `toJSON()`: 32K nodes stay under a DO storage value's 2 MB. */
export const DEFAULT_MAX_PREFIX_NODES = 32_768;

/**
 * Prompt tokens per prefix-tree key (`PREFIX_INDEX_TOKENS`, shared/config.ts): the tree indexes
 * one chained block key every this many tokens, not every KV block. 512 is a Mooncake hash block:
 * with 16-token KV blocks, every 32nd key, so `DEFAULT_MAX_PREFIX_NODES` cover ~16M prompt tokens
 * instead of ~0.5M (with every block the tree forgot a Mooncake conversation before its next
 * turn; README "Simulator"). A match then counts whole spans: a prefix shorter than one span,
 * or the tail past the last full span, is not seen by placement (the instance's KV manager still
 * reuses every cached block). The JobExecutor and the simulator both key prompts with
 * `promptBlockKeys(..., { strideBlocks: prefixStrideBlocks(indexTokens, blockSize) })`.
 */
export const DEFAULT_PREFIX_INDEX_TOKENS = 512;

/**
 * KV blocks per prefix-tree key: `indexTokens / blockSize`.
 * @throws InvariantError unless `indexTokens` is a positive multiple of `blockSize`.
 */
export function prefixStrideBlocks(indexTokens: number, blockSize: number): number {
  assert(Number.isInteger(blockSize) && blockSize > 0, `bad block size ${blockSize}`);
  const stride = indexTokens / blockSize;
  assert(
    Number.isInteger(stride) && stride > 0,
    `prefix index span ${indexTokens} is not a positive multiple of the block size ${blockSize}`,
  );
  return stride;
}

interface Node {
  key: string;
  parent: Node | null;
  children: Map<string, Node>;
  holders: Set<string>;
  lastAccessAt: number;
  tick: number;
  alive: boolean;
}

/** A leaf as it was when pushed; stale once the node is touched again, grows or is deleted. */
interface LeafEntry {
  node: Node;
  lastAccessAt: number;
  tick: number;
}

/** The persisted form: nodes in preorder, so a parent's index is below its children's. */
export interface PrefixTreeJson {
  version: 1;
  maxNodes: number;
  tick: number;
  instances: string[];
  /** [parent index (-1: top level), key, lastAccessAt, tick, holder indices into `instances`] */
  nodes: [number, string, number, number, number[]][];
}

/**
 * The cache salt of a tenant's request (`Sequence.cacheSalt`, the root of its block keys): prompts
 * share KV blocks only within one tenant and, when the client sends `cache_salt`, only with
 * requests that send the same one. An injective encoding, not a hash (the block manager compares
 * salts exactly, so distinct tenant/salt pairs can never share a block): the tenant's length
 * keeps tenant "a" + salt "bc" apart from tenant "ab" + salt "c". No salt and "" are the same.
 */
export function cacheSaltFor(tenant: string, cacheSalt?: string | null): string {
  return `${tenant.length}:${tenant}:${cacheSalt ?? ""}`;
}

/**
 * The chained keys of the full blocks of `tokenIds[0, maxTokens)` under `cacheSalt` (default
 * ""), as KvBlockManager computes them for a sequence with that salt; with `strideBlocks` k
 * (default 1), only every k-th (the keys ending blocks k, 2k, ...: each still names its whole
 * prefix). A trailing partial block or span has no key and is left out.
 */
export function promptBlockKeys(
  tokenIds: readonly number[],
  blockSize: number,
  opts: { maxTokens?: number; cacheSalt?: string; strideBlocks?: number } = {},
): string[] {
  assert(Number.isInteger(blockSize) && blockSize > 0, `bad block size ${blockSize}`);
  const stride = opts.strideBlocks ?? 1;
  assert(Number.isInteger(stride) && stride > 0, `bad prefix stride ${stride}`);
  const maxTokens = opts.maxTokens ?? tokenIds.length;
  const numFull = Math.floor(Math.min(maxTokens, tokenIds.length) / blockSize);
  const keys: string[] = [];
  let parent = opts.cacheSalt ?? "";
  for (let b = 0; b < numFull; b++) {
    parent = blockKey(parent, tokenIds, b * blockSize, (b + 1) * blockSize);
    if ((b + 1) % stride === 0) keys.push(parent);
  }
  return keys;
}

function older(a: LeafEntry, b: LeafEntry): boolean {
  return a.lastAccessAt < b.lastAccessAt || (a.lastAccessAt === b.lastAccessAt && a.tick < b.tick);
}

/** Min-heap push/pop by (lastAccessAt, tick), for LRU leaf eviction. */
function heapPush(heap: LeafEntry[], e: LeafEntry): void {
  heap.push(e);
  let i = heap.length - 1;
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (!older(heap[i] as LeafEntry, heap[p] as LeafEntry)) break;
    [heap[i], heap[p]] = [heap[p] as LeafEntry, heap[i] as LeafEntry];
    i = p;
  }
}

function heapPop(heap: LeafEntry[]): LeafEntry | undefined {
  const top = heap[0];
  const last = heap.pop();
  if (heap.length === 0 || last === undefined) return top;
  heap[0] = last;
  let i = 0;
  for (;;) {
    const l = 2 * i + 1;
    const r = l + 1;
    let m = i;
    if (l < heap.length && older(heap[l] as LeafEntry, heap[m] as LeafEntry)) m = l;
    if (r < heap.length && older(heap[r] as LeafEntry, heap[m] as LeafEntry)) m = r;
    if (m === i) break;
    [heap[i], heap[m]] = [heap[m] as LeafEntry, heap[i] as LeafEntry];
    i = m;
  }
  return top;
}

export class PrefixTree {
  private readonly root: Node = newNode("", null);
  /** Key -> node. Chained keys name one position each; on a (2^-64) collision the newest wins. */
  private readonly byKey = new Map<string, Node>();
  private size = 0;
  private tick = 0;
  /** Leaves by age, with stale entries skipped on pop (and dropped by `rebuildLeaves`). */
  private leaves: LeafEntry[] = [];

  constructor(readonly maxNodes = DEFAULT_MAX_PREFIX_NODES) {
    assert(Number.isInteger(maxNodes) && maxNodes > 0, `bad maxNodes ${maxNodes}`);
  }

  /** Nodes (cached blocks, counted once however many instances hold them). */
  get numNodes(): number {
    return this.size;
  }

  /**
   * Records that `instanceId` holds the leading blocks `blockKeys` (a prompt's chained keys from
   * the root), touches them at `now` (epoch ms), then evicts LRU leaves down to `maxNodes`.
   */
  insert(instanceId: string, blockKeys: readonly string[], now: number): void {
    let node = this.root;
    for (const key of blockKeys) {
      let child = node.children.get(key);
      if (!child) {
        child = newNode(key, node);
        node.children.set(key, child);
        this.byKey.set(key, child);
        this.size++;
      }
      child.holders.add(instanceId);
      child.lastAccessAt = Math.max(child.lastAccessAt, now);
      child.tick = ++this.tick;
      node = child;
    }
    // only the path's last node can be a leaf: every other one has the next as a child
    if (node !== this.root && node.children.size === 0) this.pushLeaf(node);
    if (this.size > this.maxNodes) this.evictLru(this.size - this.maxNodes);
  }

  /**
   * The longest cached prefix of `blockKeys` per instance, in blocks. Instances with no matched
   * block are absent; entries come in order of first appearance (deterministic). Read-only.
   */
  match(blockKeys: readonly string[]): Map<string, number> {
    const out = new Map<string, number>();
    let node = this.root;
    let depth = 0;
    for (const key of blockKeys) {
      const child = node.children.get(key);
      if (!child) break;
      depth++;
      for (const h of child.holders) out.set(h, depth);
      node = child;
    }
    return out;
  }

  /**
   * Records that `instanceId` no longer holds the blocks `blockKeys` (keys anywhere in the tree,
   * e.g. reported by the instance's KV manager), nor anything below them: a prefix without its
   * parent block cannot be reused. Without `blockKeys`, forgets the instance entirely.
   */
  evict(instanceId: string, blockKeys?: readonly string[]): void {
    if (blockKeys === undefined) {
      this.removeInstance(instanceId);
      return;
    }
    for (const key of blockKeys) {
      const node = this.byKey.get(key);
      if (node?.holders.has(instanceId)) this.removeHolder(node, instanceId);
    }
  }

  /** Forgets every block `instanceId` holds (the instance was scaled in or failed). */
  removeInstance(instanceId: string): void {
    for (const child of [...this.root.children.values()]) {
      if (child.holders.has(instanceId)) this.removeHolder(child, instanceId);
    }
  }

  /** The instances the tree knows of, in first-seen (preorder) order. */
  instances(): string[] {
    const seen = new Set<string>();
    this.walk((n) => {
      for (const h of n.holders) seen.add(h);
    });
    return [...seen];
  }

  /** A plain-data snapshot for DO storage (size grows with the nodes: keep `maxNodes` modest). */
  toJSON(): PrefixTreeJson {
    const instances: string[] = [];
    const instanceIndex = new Map<string, number>();
    const nodeIndex = new Map<Node, number>();
    const nodes: PrefixTreeJson["nodes"] = [];
    this.walk((n) => {
      const holders: number[] = [];
      for (const h of n.holders) {
        let i = instanceIndex.get(h);
        if (i === undefined) {
          i = instances.length;
          instances.push(h);
          instanceIndex.set(h, i);
        }
        holders.push(i);
      }
      const parent = n.parent === this.root || !n.parent ? -1 : (nodeIndex.get(n.parent) as number);
      nodeIndex.set(n, nodes.length);
      nodes.push([parent, n.key, n.lastAccessAt, n.tick, holders]);
    });
    return { version: 1, maxNodes: this.maxNodes, tick: this.tick, instances, nodes };
  }

  /** Restores a `toJSON()` snapshot. @throws InvariantError on a malformed snapshot. */
  static fromJSON(json: PrefixTreeJson): PrefixTree {
    assert(json.version === 1, `unknown prefix tree version ${String(json.version)}`);
    const tree = new PrefixTree(json.maxNodes);
    const built: Node[] = [];
    for (const [parentIndex, key, lastAccessAt, tick, holders] of json.nodes) {
      assert(parentIndex < built.length, "prefix tree snapshot is not in preorder");
      const parent = parentIndex < 0 ? tree.root : (built[parentIndex] as Node);
      const node = newNode(key, parent);
      node.lastAccessAt = lastAccessAt;
      node.tick = tick;
      for (const i of holders) {
        const id = json.instances[i];
        assert(id !== undefined, `holder index ${i} out of range`);
        node.holders.add(id);
      }
      parent.children.set(key, node);
      tree.byKey.set(key, node);
      built.push(node);
    }
    tree.size = built.length;
    tree.tick = json.tick;
    tree.rebuildLeaves();
    tree.checkInvariants();
    return tree;
  }

  /** Checks the tree's invariants (tests call this after every operation). */
  checkInvariants(): void {
    let count = 0;
    this.walk((n) => {
      count++;
      assert(n.holders.size > 0, `node ${n.key} has no holder`);
      assert(n.parent?.children.get(n.key) === n, `node ${n.key} is detached from its parent`);
      if (n.parent && n.parent !== this.root) {
        for (const h of n.holders) {
          assert(n.parent.holders.has(h), `${h} holds ${n.key} but not its parent`);
        }
        assert(n.tick > 0 && n.parent.lastAccessAt >= n.lastAccessAt, `node ${n.key} is newer`);
      }
    });
    assert(count === this.size, `tree counts ${this.size} nodes but holds ${count}`);
    assert(this.size <= this.maxNodes, `tree holds ${this.size} nodes, over ${this.maxNodes}`);
    for (const [key, n] of this.byKey) assert(n.key === key, `index maps ${key} to ${n.key}`);
  }

  /** Preorder over all nodes, children in insertion order. */
  private walk(visit: (n: Node) => void): void {
    const stack = [...this.root.children.values()].reverse();
    for (let n = stack.pop(); n; n = stack.pop()) {
      visit(n);
      const kids = [...n.children.values()];
      for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i] as Node);
    }
  }

  /** Drops `instanceId` from `node` and below; nodes left without holders are deleted. */
  private removeHolder(node: Node, instanceId: string): void {
    node.holders.delete(instanceId);
    if (node.holders.size === 0) {
      // every descendant's holders were a subset of {instanceId}: the whole subtree goes
      this.deleteSubtree(node);
      return;
    }
    for (const child of [...node.children.values()]) {
      if (child.holders.has(instanceId)) this.removeHolder(child, instanceId);
    }
  }

  /** Detaches `node` and deletes it with everything below; a parent left childless is a leaf. */
  private deleteSubtree(node: Node): void {
    const parent = node.parent;
    parent?.children.delete(node.key);
    const stack = [node];
    for (let n = stack.pop(); n; n = stack.pop()) {
      if (this.byKey.get(n.key) === n) this.byKey.delete(n.key);
      n.alive = false;
      this.size--;
      for (const c of n.children.values()) stack.push(c);
    }
    if (parent && parent !== this.root && parent.children.size === 0) this.pushLeaf(parent);
  }

  private pushLeaf(n: Node): void {
    heapPush(this.leaves, { node: n, lastAccessAt: n.lastAccessAt, tick: n.tick });
    // stale entries pile up as leaves are touched again or grow: start over now and then
    if (this.leaves.length > 2 * this.size + 1024) this.rebuildLeaves();
  }

  private rebuildLeaves(): void {
    this.leaves = [];
    this.walk((n) => {
      if (n.children.size === 0) {
        heapPush(this.leaves, { node: n, lastAccessAt: n.lastAccessAt, tick: n.tick });
      }
    });
  }

  /** Removes the `count` least recently touched leaves (a parent left childless becomes one). */
  private evictLru(count: number): void {
    for (let i = 0; i < count; ) {
      const e = heapPop(this.leaves);
      if (!e) return;
      const n = e.node;
      if (!n.alive || n.tick !== e.tick || n.children.size > 0) continue; // stale entry
      this.deleteSubtree(n);
      i++;
    }
  }
}

function newNode(key: string, parent: Node | null): Node {
  return {
    key,
    parent,
    children: new Map(),
    holders: new Set(),
    lastAccessAt: 0,
    tick: 0,
    alive: true,
  };
}
