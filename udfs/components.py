"""Connected components of a graph that fits in one process, labelled by each component's
smallest node: the finishing step ``jobs.components`` takes when the edges are few enough.

Nodes are Arrow values (strings or integers). "Smallest" is Arrow's sort order, which for strings
compares UTF-8 bytes like Spark does, so this labelling equals the distributed one node for node.
The union itself is ``scipy.sparse.csgraph.connected_components`` on the nodes' sorted positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


def smallest_node_labels(u: pa.Array, v: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Every node of the edges ``(u[i], v[i])`` (ascending) and its component's smallest node.

    ``u`` and ``v``: equal-length Arrow arrays (or chunked arrays) of one type, no nulls.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    u, v = (x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x for x in (u, v))
    if len(u) != len(v):
        raise ValueError(f"edge ends differ in length: {len(u)} != {len(v)}")
    if u.null_count or v.null_count:
        raise ValueError("edges must not have null ends")
    if len(u) == 0:
        return pa.array([], u.type), pa.array([], u.type)
    encoded = pc.dictionary_encode(pa.concat_arrays([u, v]))
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    nodes = encoded.dictionary.take(order)  # ascending; node k is nodes[k]
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    ends = position[encoded.indices.to_numpy()]
    m, n = len(u), len(order)
    graph = coo_array((np.ones(m, dtype=np.int8), (ends[:m], ends[m:])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    # positions ascend with the nodes, so a component's first position is its smallest node
    _, first = np.unique(label, return_index=True)
    return nodes, nodes.take(pa.array(first[label]))
